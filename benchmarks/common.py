"""Small helpers shared by the benchmark scripts: timing, machine description, JSON, tables.

Benchmarks compare figures measured *inside one run* (ratios), because the machines they
run on are shared and noisy; every figure is a median over repeats.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

__all__ = [
  "time_fn",
  "machine_info",
  "write_json",
  "print_table",
  "format_table",
  "program_structure",
  "load_runs",
  "append_run",
  "enable_compile_cache",
  "add_report_options",
  "report_command",
  "write_report",
]


def _block(result):
  """Waits for JAX results (no-op for anything else)."""
  jax = sys.modules.get("jax")
  if jax is not None:
    jax.block_until_ready(result)
  return result


def _percentile(sorted_values: Sequence[float], q: float) -> float:
  """Linear-interpolated percentile of an already sorted list, q in [0, 100]."""
  if len(sorted_values) == 1:
    return sorted_values[0]
  pos = (len(sorted_values) - 1) * q / 100.0
  lo, hi = math.floor(pos), math.ceil(pos)
  return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def time_fn(fn: Callable[..., Any], *args, repeats: int = 20, warmup: int = 2, **kwargs) -> dict:
  """Times ``fn(*args, **kwargs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

  JAX results are waited for (``jax.block_until_ready``) inside the timed region, so
  asynchronous dispatch is not mistaken for speed. Compile before timing (warmup ≥ 1).

  Returns:
    ``dict(median_s, p10_s, p90_s, min_s, repeats)``.
  """
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  for _ in range(warmup):
    _block(fn(*args, **kwargs))
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    _block(fn(*args, **kwargs))
    samples.append(time.perf_counter() - start)
  samples.sort()
  return dict(
    median_s=statistics.median(samples),
    p10_s=_percentile(samples, 10.0),
    p90_s=_percentile(samples, 90.0),
    min_s=samples[0],
    repeats=repeats,
  )


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def machine_info(packages: Iterable[str] = ("jax", "jaxlib", "numpy")) -> dict:
  """Where and when a benchmark ran: versions, JAX devices, platform, CPU model, date."""
  info: dict = dict(
    date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    python=platform.python_version(),
    platform=platform.platform(),
    cpu_model=_cpu_model(),
    cpu_count=os.cpu_count(),
    versions={name: _version(name) for name in packages},
  )
  try:
    import jax  # pylint: disable=import-outside-toplevel

    info["jax_backend"] = jax.default_backend()
    info["jax_devices"] = [str(d) for d in jax.devices()]
    info["jax_device_kinds"] = sorted({d.device_kind for d in jax.devices()})
  except Exception as err:  # noqa: BLE001 - describe the machine even without a backend
    info["jax_devices"] = f"unavailable: {err!r}"
  return info


PLATFORMS = ("cpu", "cuda", "tpu")
_CUSTOM_CALL = re.compile(
  r"stablehlo\.custom_call\s*@([\w.$-]+)|call_target_name\s*=\s*\"([^\"]+)\""
)


def hlo_structure(text: str) -> dict:
  """Loops, conditionals and custom-call targets of a lowered StableHLO module's text.

  Returns:
    ``dict(loops, conds, custom_calls)``: the number of ``stablehlo.while`` ops, of
    ``stablehlo.case`` / ``stablehlo.if`` ops, and ``{target: count}`` sorted by target.
    A conditional whose index is a constant (a single-platform ``lax.platform_dependent``)
    is counted too; XLA removes it when it compiles the program.
  """
  calls: dict[str, int] = {}
  for match in _CUSTOM_CALL.finditer(text):
    target = match.group(1) or match.group(2)
    calls[target] = calls.get(target, 0) + 1
  return dict(
    loops=len(re.findall(r"\bstablehlo\.while\b", text)),
    conds=len(re.findall(r"\bstablehlo\.(?:case|if)\b", text)),
    custom_calls=dict(sorted(calls.items())),
  )


def program_structure(
  traced, platforms: Sequence[str] = PLATFORMS, texts: Mapping[str, str] | None = None
) -> dict:
  """:func:`hlo_structure` of a traced JAX program lowered for each platform, without a device.

  Args:
    traced: ``jax.jit(f).trace(*args)``.
    platforms: platform names accepted by ``lower(lowering_platforms=...)``.
    texts: module texts already lowered, by platform (reused instead of lowering again).

  Returns:
    ``{platform: hlo_structure}``; a platform the program does not lower for maps to
    ``{"error": "ExceptionType: message"}``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> traced = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: y * 2, x)).trace(1.0)
    >>> program_structure(traced, ("cpu",))["cpu"]["loops"]
    1
  """
  out = {}
  for name in platforms:
    if texts and name in texts:
      out[name] = hlo_structure(texts[name])
      continue
    try:
      text = traced.lower(lowering_platforms=(name,)).as_text()
    except (NotImplementedError, ValueError, RuntimeError) as err:
      # A primitive without a lowering rule for that platform, or an unknown platform.
      message = str(err).strip().splitlines()[0] if str(err).strip() else ""
      out[name] = dict(error=f"{type(err).__name__}: {message}"[:300])
      continue
    out[name] = hlo_structure(text)
  return out


def format_structure(structure: Mapping[str, Any]) -> str:
  """One line per platform: ``cuda: 3 loops, 2 conds, custom calls cusolver_potrf x1``."""
  lines = []
  for name, s in structure.items():
    if "error" in s:
      lines.append(f"{name}: does not lower ({s['error']})")
      continue
    calls = ", ".join(f"{t} x{c}" for t, c in s["custom_calls"].items()) or "none"
    lines.append(f"{name}: {s['loops']} loops, {s['conds']} conds, custom calls {calls}")
  return "; ".join(lines)


def _json_default(obj):
  try:
    import numpy as np  # pylint: disable=import-outside-toplevel

    if isinstance(obj, np.generic):
      return obj.item()
    if isinstance(obj, np.ndarray):
      return obj.tolist()
  except ImportError:  # pragma: no cover
    pass
  if hasattr(obj, "tolist"):  # JAX arrays
    return obj.tolist()
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as indented JSON atomically (temporary file, then ``os.replace``)."""
  path = os.path.abspath(path)
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=2, default=_json_default, allow_nan=True)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _cell(value, fmt: str | None) -> str:
  if value is None:
    return "-"
  if fmt:
    try:
      return format(value, fmt)
    except (TypeError, ValueError):
      pass
  return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence) -> str:
  """Formats rows (dicts) as an aligned text table.

  Args:
    rows: one mapping per row.
    columns: keys, or ``(key, header)`` / ``(key, header, format_spec)`` tuples.
  """
  specs = []
  for col in columns:
    if isinstance(col, str):
      specs.append((col, col, None))
    else:
      key, header, *rest = col
      specs.append((key, header, rest[0] if rest else None))
  table = [[header for _, header, _ in specs]]
  table += [[_cell(row.get(key), fmt) for key, _, fmt in specs] for row in rows]
  widths = [max(len(r[i]) for r in table) for i in range(len(specs))]
  lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence) -> None:
  """Prints :func:`format_table` to stdout."""
  print(format_table(rows, columns), flush=True)


def load_runs(path: str | None) -> dict:
  """The records of a JSON-lines runs file by their ``"key"``; ``{}`` without a file.

  A line that is not valid JSON can only be the last one, cut by an interrupted write; it is
  skipped (its run is trained again). Any other bad line is an error that names the file.
  """
  runs: dict = {}
  if not (path and os.path.exists(path)):
    return runs
  with open(path, encoding="utf-8") as f:
    lines = [line.strip() for line in f]
  lines = [line for line in lines if line]
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as err:
      if number == len(lines):
        break
      raise ValueError(f"{path}: line {number} is not JSON ({err})") from err
    runs[record["key"]] = record
  return runs


def append_run(path: str | None, record: dict) -> None:
  """Appends one record as a line of ``path`` (flushed to disk); nothing without a path.

  A last line cut by an interrupted write (no final newline) is removed first: it is the
  unfinished record that :func:`load_runs` skips, and appending after it would leave it inside
  the file, where it is an error.
  """
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a+b") as f:
    if f.seek(0, os.SEEK_END):
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)
    f.write((json.dumps(record, allow_nan=True, default=float) + "\n").encode("utf-8"))
    f.flush()
    os.fsync(f.fileno())


def enable_compile_cache(path: str) -> None:
  """Caches compiled programs on disk: the same program built again (another seed, another
  injected rate) is loaded instead of compiled."""
  import jax  # pylint: disable=import-outside-toplevel

  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def add_report_options(parser) -> None:
  """``--json`` and ``--md`` (where the report goes) and ``--note`` / ``--reading`` (its prose)."""
  parser.add_argument("--json", default=None)
  parser.add_argument("--md", default=None)
  parser.add_argument("--note", default=None, help="a paragraph for the report (choices, reasons)")
  parser.add_argument("--reading", default=None, help="a paragraph for the report's reading")


def report_command(script: str, argv: Sequence[str] | None, prose=("--note", "--reading")) -> str:
  """The command line of a report, without the options whose text the report itself holds."""
  args = list(sys.argv[1:] if argv is None else argv)
  shown = []
  for i, a in enumerate(args):
    if a in prose or (i and args[i - 1] in prose) or a.startswith(tuple(f"{p}=" for p in prose)):
      continue
    shown.append(a if " " not in a else repr(a))
  return " ".join([f"python benchmarks/{script}", *shown])


def write_report(result: dict, json_path: str | None, md_path: str | None, markdown) -> None:
  """Writes ``result`` as JSON and ``markdown(result)`` where asked, and prints the markdown."""
  text = markdown(result)
  if json_path:
    write_json(json_path, result)
  if md_path:
    with open(md_path, "w", encoding="utf-8") as f:
      f.write(text)
  print(text)
