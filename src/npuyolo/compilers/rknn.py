"""RKNN-Toolkit2 as a referee: parse its printed build log and map its placement back to our ONNX nodes.

Everything here except `compile_onnx` is a pure function of log text (tested on recorded logs). What the log
gives (shared/research/real-compilers.md): on stdout, with verbose=True, a "Network Layer Information Table" with
a Target (NPU/CPU) per row and a FullName `OpType:node`, then total internal and weight memory; on stderr the
rewrites the compiler made (`rule: remove node = [...], add node = [...]`). Rows name nodes *after* those rewrites,
and activations or Adds fused into a Conv (OpType `ConvLeakyReluAdd`) have no row of their own, so mapping is a
chain: our node -> rewrite -> row, or our node -> the Conv row it was fused into.
"""

from __future__ import annotations

import ast
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from npuyolo.compilers.envs import CompilerError, clean_env, require
from npuyolo.compilers.manifest import write_manifest

__all__ = ["LayerRow", "Mapping", "Rewrite", "RknnBuild", "compile_onnx", "failed_rule", "map_to_onnx", "parse_layer_table",
           "parse_memory", "parse_rewrites", "parse_version", "split_log"]

IO_OPS = {"InputOperator", "OutputOperator"}  # placeholders for the graph's inputs and outputs: not work
_PREFIX = re.compile(r"^(?:[A-Z] RKNN: \[[\d:.]+\] ?)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class LayerRow:
    id: int
    op_type: str
    dtype: str
    target: str  # NPU | CPU
    input_shape: str
    output_shape: str
    rw_kb: float | None
    full_name: str  # "OpType:node"

    @property
    def node(self) -> str:
        return self.full_name.split(":", 1)[1] if ":" in self.full_name else self.full_name


@dataclass
class Rewrite:
    rule: str
    removed: list[str]
    added: list[str]


def _strip(line: str) -> str:
    return _PREFIX.sub("", _ANSI.sub("", line)).rstrip()


def parse_layer_table(stdout: str) -> list[LayerRow]:
    """Rows of the "Network Layer Information Table", I/O placeholders included (callers drop IO_OPS)."""
    lines = [_strip(x) for x in stdout.splitlines()]
    try:
        start = next(i for i, x in enumerate(lines) if x.strip() == "Network Layer Information Table")
    except StopIteration:
        return []
    header = next((i for i in range(start, min(start + 5, len(lines))) if lines[i].lstrip().startswith("ID ")), None)
    if header is None:
        return []
    rows = []
    for line in lines[header + 1:]:
        if not line.strip() or set(line.strip()) <= {"-", "+"}:
            if rows:  # the dashed line after the last row ends the table
                break
            continue
        parts = line.split(None, 8)
        if len(parts) < 9 or not parts[0].isdigit():
            break
        rw = parts[7]
        rows.append(LayerRow(id=int(parts[0]), op_type=parts[1], dtype=parts[2], target=parts[3].upper(), input_shape=parts[4],
                             output_shape=parts[5], rw_kb=float(rw) if re.fullmatch(r"[\d.]+", rw) else None,
                             full_name=parts[8].strip()))
    return rows


_SIZE = re.compile(r"Total (Internal|Weight) Memory Size:\s*([\d.]+)\s*(B|KB|MB|GB)", re.I)
_UNIT_KB = {"b": 1 / 1024, "kb": 1.0, "mb": 1024.0, "gb": 1024.0 ** 2}


def parse_memory(stdout: str) -> dict[str, float]:
    """{'internal_kb': ..., 'weight_kb': ...} from the log's closing totals (empty if absent)."""
    out = {}
    for kind, value, unit in _SIZE.findall(_ANSI.sub("", stdout)):
        out[f"{kind.lower()}_kb"] = float(value) * _UNIT_KB[unit.lower()]
    return out


def parse_version(log: str) -> str | None:
    """The toolkit's version as it prints it ('I rknn-toolkit2 version: 2.5.0')."""
    m = re.search(r"rknn-toolkit2 version:\s*([\w.+-]+)", _ANSI.sub("", log))
    return m.group(1) if m else None


_REWRITE = re.compile(r"^\s*(?:D\s+)?\s*([A-Za-z0-9_]+): remove node = (\[.*?\])(?:, add node = (\[.*?\]))?\s*$")


def parse_rewrites(stderr: str) -> list[Rewrite]:
    """Every `rule: remove node = [...], add node = [...]` line the compiler logged, in order (a removal may add nothing)."""
    out = []
    for line in _ANSI.sub("", stderr).splitlines():
        m = _REWRITE.match(line)
        if m:
            try:
                removed, added = ast.literal_eval(m.group(2)), ast.literal_eval(m.group(3) or "[]")
            except (ValueError, SyntaxError):
                continue
            out.append(Rewrite(m.group(1), [str(x) for x in removed], [str(x) for x in added]))
    return out


def failed_rule(stderr: str) -> str | None:
    """The graph rule a failed build names ("You can add disable_rules=['X']"), or the `_p_X` frame it died in."""
    text = _ANSI.sub("", stderr)
    m = re.search(r"disable_rules=\['([A-Za-z0-9_]+)'\]", text)
    if m:
        return m.group(1)
    frames = re.findall(r"rknn\.api\.rules\.\w+\._p_([A-Za-z0-9_]+)", text)
    return frames[-1] if frames else None


def split_log(text: str) -> tuple[str, str]:
    """(stdout, stderr) of the last attempt in a log file written by `compile_onnx`."""
    last = text.rsplit("### attempt ", 1)[-1]
    out, _, err = last.partition("\n### stderr\n")
    return out.partition("\n### stdout\n")[2], err


# -------------------------------------------------------------------------------------------- mapping
# Row OpTypes that name what they absorbed: ConvLeakyReluAdd = Conv + LeakyRelu + Add; ConvExSwish = Conv + SiLU.
_FUSED_PARTS = ("LeakyRelu", "HardSwish", "Sigmoid", "PRelu", "Swish", "Relu", "Clip", "Add", "Mul", "Sub")  # longest first


def fused_parts(row_op: str) -> list[str]:
    """The ops a fused row names after its Conv: 'ConvLeakyReluAdd' -> [LeakyRelu, Add]; 'exMatMul' -> []."""
    if not row_op.startswith("Conv"):
        return []
    rest, parts = row_op[len("Conv"):], []
    while rest:
        if rest.startswith(("Ex", "ex")):
            rest = rest[2:]
            continue
        part = next((p for p in _FUSED_PARTS if rest.startswith(p)), None)
        if part is None:
            return []  # a name we cannot read: claim nothing
        parts.append(part)
        rest = rest[len(part):]
    return parts


@dataclass
class Mapping:
    """Our ONNX node -> the compiler's decision, and how it was found (row | rewrite | fused)."""

    node: str
    op: str
    target: str | None  # NPU | CPU | None (not mapped)
    via: str | None  # row | derived | rewrite | fused
    row: str | None


def _absorbs(row_op: str, node_op: str) -> bool:
    """Does a fused Conv row (ConvLeakyReluAdd, ConvSigmoid, ConvExSwish) contain this op? SiLU's Sigmoid and Mul
    are one Swish."""
    parts = fused_parts(row_op)
    return node_op in parts or (node_op in ("Sigmoid", "Mul") and "Swish" in parts)


def map_to_onnx(nodes: list[tuple[str, str, list[str], list[str]]], rows: list[LayerRow], rewrites: list[Rewrite]) -> list[Mapping]:
    """Map each of our nodes (name, op, inputs, outputs) to a row's Target.

    1. row: the node's name is a row's node name;
    2. derived: a row's name is the node's name plus a compiler suffix ('#1', '_ConvAdd'; longest such name of ours
       wins, so 'Transpose_1_rs' belongs to 'Transpose_1', not to 'Transpose'; '_output_...' names a new node on
       the node's output tensor and does not count);
    3. rewrite: the node was removed by a logged rewrite and every row of the nodes added for it agrees
       (rewrites chain: an added node may itself be removed later);
    4. fused: an activation/Add/Mul without a row whose input comes from a mapped node whose row OpType names
       this op (ConvLeakyReluAdd absorbs LeakyRelu and Add): it shares that row's Target.
    Anything else stays unmapped (target None): reported, never guessed.
    """
    by_name = {r.node: r for r in rows if r.op_type not in IO_OPS}
    added_for: dict[str, list[str]] = {}
    for rw in rewrites:
        for removed in rw.removed:
            added_for.setdefault(removed, []).extend(rw.added)
    ours = {n[0] for n in nodes}
    added = {a for rw in rewrites for a in rw.added} - ours

    def extensions(names: set[str]) -> dict[str, list[LayerRow]]:
        """Rows named `<name>#1`, `<name>_ConvAdd`...: the longest of `names` they extend. '<name>_output_0_conv' is a
        new node fed by <name>'s output tensor, not <name> itself, and does not count."""
        found: dict[str, list[LayerRow]] = {}
        for r in by_name.values():
            if r.node in names or r.node in ours:  # an exact name is a row of its own, not an extension
                continue
            cuts = [i for i, c in enumerate(r.node) if c in "#_"]
            i = next((i for i in reversed(cuts) if r.node[:i] in names), None)
            if i is not None and not r.node[i:].startswith("_output"):
                found.setdefault(r.node[:i], []).append(r)
        return found

    derived = extensions(ours)
    derived_added = extensions(added)  # rewrites' new nodes get suffixes too ('..._conv' -> '..._conv_ConvAddRelu')

    def via_rewrites(name: str, seen: frozenset = frozenset()) -> list[LayerRow]:
        found = []
        for new in added_for.get(name, []):
            if new in seen:
                continue
            if new in by_name:
                found.append(by_name[new])
            elif new in derived_added:
                found.extend(derived_added[new])
            else:
                found.extend(via_rewrites(new, seen | {name}))
        return found

    out: list[Mapping] = []
    producer_rows: dict[str, list[LayerRow]] = {}  # tensor -> the row(s) its producer became (for fusion)
    for name, op, inputs, outputs in nodes:
        row, via, rows_of_node = by_name.get(name), "row", []
        if row is None and len({r.target for r in derived.get(name, [])}) == 1:
            row, via = derived[name][0], "derived"
        if row is None:
            hits = via_rewrites(name)
            if len({h.target for h in hits}) == 1:
                row, via, rows_of_node = hits[0], "rewrite", hits
        if row is None:
            upstream = [r for t in inputs for r in producer_rows.get(t, [])]
            fused = [r for r in upstream if _absorbs(r.op_type, op)]
            if fused:
                row, via = fused[0], "fused"
        if row is not None:
            for t in outputs:
                producer_rows[t] = rows_of_node or [row]
        out.append(Mapping(name, op, row.target if row else None, via if row else None, row.full_name if row else None))
    return out


# -------------------------------------------------------------------------------------------- running it
@dataclass
class RknnBuild:
    """One compile: the compiler's decision per row and per our node, memory, the log it came from."""

    compiler: str
    version: str
    platform: str
    onnx: str
    log: str
    seconds: float
    disabled_rules: list[str]
    rows: list[LayerRow]
    mappings: list[Mapping]
    memory: dict[str, float]
    rewrites: int
    rknn_file: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def work_rows(self) -> list[LayerRow]:
        return [r for r in self.rows if r.op_type not in IO_OPS]

    def summary(self) -> dict:
        work = self.work_rows
        mapped = [m for m in self.mappings if m.target]
        return {"rows": len(work), "rows_npu": sum(r.target == "NPU" for r in work), "rows_cpu": sum(r.target == "CPU" for r in work),
                "cpu_rows": [r.full_name for r in work if r.target == "CPU"], "nodes": len(self.mappings), "nodes_mapped": len(mapped),
                "mapped_by": {k: sum(m.via == k for m in mapped) for k in ("row", "derived", "rewrite", "fused")}}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = self.summary()
        return d


DRIVER = Path(__file__).with_name("rknn_driver.py")



MAX_RULE_RETRIES = 3


def _local_dataset(listing: Path, workdir: Path) -> Path:
    """The calibration images copied under `workdir`, listed by relative names: RKNN splits a dataset line on spaces
    (one path per model input), so a path with a space in it (a user's registry folder) would break the build."""
    import shutil

    base = listing.parent
    folder = workdir / "calib"
    folder.mkdir(exist_ok=True)
    names = []
    for i, line in enumerate(x.strip() for x in listing.read_text(encoding="utf-8").splitlines()):
        if not line:
            continue
        src = Path(line) if Path(line).is_absolute() else base / line
        dst = folder / f"{i:03d}{src.suffix}"
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        names.append(f"calib/{dst.name}")
    local = workdir / "calib.txt"
    local.write_text("\n".join(names) + "\n", encoding="utf-8")
    return local


def compile_onnx(onnx_path: Path, platform: str, dataset_list: Path, workdir: Path, timeout: float = 900) -> RknnBuild:
    """Run the driver inside the rknn venv; on a build that dies inside a graph rule, retry with that rule disabled.

    The compiler writes scratch files (check*.onnx) into its working directory: it runs in `workdir`. The full
    stdout+stderr of every attempt is kept in `workdir/rknn-<platform>.log`.
    """
    import onnx

    env = require("rknn")
    workdir.mkdir(parents=True, exist_ok=True)
    dataset_list = _local_dataset(Path(dataset_list), workdir)
    log = workdir / f"rknn-{platform}.log"
    out = workdir / f"{onnx_path.stem}-{platform}.rknn"
    disabled: list[str] = []
    started = time.perf_counter()
    texts = []
    for _ in range(MAX_RULE_RETRIES + 1):
        cmd = [env.python, str(DRIVER), "--onnx", str(Path(onnx_path).resolve()), "--target", platform,
               "--dataset", dataset_list.name, "--out", str(out.resolve())]
        for rule in disabled:
            cmd += ["--disable-rule", rule]
        try:  # the venv must not see our PYTHONPATH (npuyolo's src, another numpy): only its own packages
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=timeout, env=clean_env())
        except subprocess.TimeoutExpired:
            raise CompilerError(f"rknn build of {onnx_path.name} for {platform} took over {timeout:.0f} s") from None
        texts.append(f"### attempt {len(texts) + 1}: disable_rules={disabled}\n### stdout\n{done.stdout}\n### stderr\n{done.stderr}\n")
        log.write_text("".join(texts), encoding="utf-8")
        if done.returncode == 0:
            break
        rule = failed_rule(done.stderr)
        if rule is None or rule in disabled:
            tail = next((x for x in reversed(_ANSI.sub("", done.stderr).strip().splitlines()) if x.strip()), "no output")
            raise CompilerError(f"rknn build of {onnx_path.name} for {platform} failed ({tail.strip()[:200]}); see {log}")
        disabled.append(rule)
    else:
        raise CompilerError(f"rknn build of {onnx_path.name} for {platform} still failed after disabling {disabled}; see {log}")
    rows = parse_layer_table(done.stdout)
    if not rows:
        raise CompilerError(f"the rknn log has no 'Network Layer Information Table' (verbose off?); see {log}")
    rewrites = parse_rewrites(done.stderr)
    model = onnx.load(str(onnx_path), load_external_data=False)
    nodes = [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node if n.op_type not in ("Constant", "Identity")]
    notes = [f"rule {r} disabled: the build failed inside it (the compiler's own suggestion)" for r in disabled]
    if out.is_file():  # what the simulator needs to rebuild it for `deploy eval`
        write_manifest(out, "rknn", Path(onnx_path), target=platform, dataset=dataset_list, disabled_rules=disabled)
    return RknnBuild(compiler="rknn-toolkit2", version=parse_version(done.stderr + done.stdout) or env.version, platform=platform,
                     onnx=str(onnx_path), log=str(log), seconds=round(time.perf_counter() - started, 2), disabled_rules=disabled,
                     rows=rows, mappings=map_to_onnx(nodes, rows, rewrites), memory=parse_memory(done.stdout),
                     rewrites=len(rewrites), rknn_file=str(out) if out.is_file() else None, notes=notes)
