#!/usr/bin/env python3
"""ligerd's op entries -> the code that derives from them.

Every op has one declarative entry in kernels/ops/<family>.toml (docs/design/op-entries.md says
why TOML and what each field means): its name, doc, named tensors (role, optional, dtypes, shape,
aliasing), named scalars, the NVRTC source of its kernels and the kernels' launch bounds. From
them this script writes:

  cpp DIR       DIR/kernels/ops/entries/<family>.h: per op, named tensor and scalar indices
                (entry::<op>::T::X, entry::<op>::S::eps), its launch bounds, and BaseSpec(): the
                OpSpec with everything the entry says (name, doc, tensors, scalars, sources with
                every header the source includes, NVRTC options with the launch-bound defines);
                DIR/kernels/ops/entries/all_ops.h: the accessor of every op, and AllOpsList()
                in entry order (an entry without its accessor in the op's .cc does not link).
  python FILE   the Python launch signatures (ligerd/_entries.py): ordered tensor and scalar
                names per op, so ops call `_backend.call(op, X=x, eps=...)` by name.
  sources       the NVRTC files the entries compile (one per line), for the embedded-source list.
  check FILE    exit 1 when FILE (the committed _entries.py) is not what `python` would write.

Only the standard library (tomllib, Python 3.11+).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY_DIR = ROOT / "kernels" / "ops"
DTYPE_SETS = {"float": ["float32", "bfloat16", "float16"], "f32": ["float32"], "i64": ["int64"]}
CPP_DTYPE = {"float32": "DType::kFloat32", "bfloat16": "DType::kBFloat16", "float16": "DType::kFloat16",
             "int64": "DType::kInt64", "int32": "DType::kInt32"}
ROLES = ("input", "output")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"(kernels/[^"]+)"', re.M)


class EntryError(Exception):
    pass


def load_families(entry_dir: Path = ENTRY_DIR):
    """[(family, path, data)] in file-name order; every field checked."""
    families = []
    seen_ops = {}
    for path in sorted(entry_dir.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        family = path.stem
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        if "op" not in data or not data["op"]:
            raise EntryError(f"{where}: no [[op]] entries")
        for key in data:
            if key not in ("source", "op", "doc"):
                raise EntryError(f"{where}: unknown top-level key {key!r}")
        if "source" in data and not (ROOT / data["source"]).is_file():
            raise EntryError(f"{where}: source {data['source']} does not exist")
        text = "".join((ROOT / f).read_text() for f in [data["source"], *includes_of(data["source"])]) \
            if "source" in data else ""
        for op in data["op"]:
            check_op(where, op, "source" in data)
            for key, _, _ in bounds(op):
                if f"LIGERD_LB_{key.upper()}" not in text:
                    raise EntryError(f"{where}: op {op['name']}: launch bound {key!r}: the source never "
                                     f"uses LIGERD_LB_{key.upper()}")
            if op["name"] in seen_ops:
                raise EntryError(f"{where}: op {op['name']} is also in {seen_ops[op['name']]}")
            seen_ops[op["name"]] = where
        families.append((family, path, data))
    return families


def check_op(where, op, has_source):
    for key in op:
        if key not in ("name", "doc", "tensors", "scalars", "bounds", "options"):
            raise EntryError(f"{where}: op {op.get('name')}: unknown key {key!r}")
    name = op.get("name", "")
    if not IDENT.match(name):
        raise EntryError(f"{where}: op name {name!r} is not an identifier")
    if not op.get("doc"):
        raise EntryError(f"{where}: op {name}: no doc")
    names = set()
    for t in op.get("tensors", []):
        tn = t.get("name", "")
        if not IDENT.match(tn) or tn in names:
            raise EntryError(f"{where}: op {name}: bad or repeated tensor name {tn!r}")
        names.add(tn)
        if t.get("role") not in ROLES:
            raise EntryError(f"{where}: op {name}: tensor {tn}: role must be one of {ROLES}")
        dt = t.get("dtypes")
        if not ((isinstance(dt, str) and dt in DTYPE_SETS) or
                (isinstance(dt, list) and dt and all(d in CPP_DTYPE for d in dt))):
            raise EntryError(f"{where}: op {name}: tensor {tn}: dtypes must be one of "
                             f"{sorted(DTYPE_SETS)} or a list of {sorted(CPP_DTYPE)}")
        if not t.get("shape"):
            raise EntryError(f"{where}: op {name}: tensor {tn}: no shape")
        for key in t:
            if key not in ("name", "role", "optional", "dtypes", "shape", "may_alias"):
                raise EntryError(f"{where}: op {name}: tensor {tn}: unknown key {key!r}")
        alias = t.get("may_alias", "")
        if alias and (t["role"] != "output" or alias not in names):
            raise EntryError(f"{where}: op {name}: tensor {tn}: may_alias must name an earlier "
                             f"tensor of an output")
    if not op.get("tensors"):
        raise EntryError(f"{where}: op {name}: no tensors")
    snames = [s["name"] if isinstance(s, dict) else s for s in op.get("scalars", [])]
    for s in snames:
        if not IDENT.match(s) or snames.count(s) > 1:
            raise EntryError(f"{where}: op {name}: bad or repeated scalar name {s!r}")
    for kernel, bound in op.get("bounds", {}).items():
        threads, blocks = (bound, 0) if isinstance(bound, int) else (bound + [0])[:2]
        if not IDENT.match(kernel) or not (32 <= threads <= 1024 and threads % 32 == 0) or blocks < 0:
            raise EntryError(f"{where}: op {name}: launch bound {kernel} = {bound}: want "
                             f"threads (a multiple of 32, <= 1024) or [threads, min blocks per SM]")
    if op.get("bounds") and not has_source:
        raise EntryError(f"{where}: op {name}: launch bounds without a kernel source")


def scalar_names(op):
    return [s["name"] if isinstance(s, dict) else s for s in op.get("scalars", [])]


def bounds(op):
    """[(key, threads, min_blocks)] in entry order."""
    out = []
    for kernel, bound in op.get("bounds", {}).items():
        threads, blocks = (bound, 0) if isinstance(bound, int) else (list(bound) + [0])[:2]
        out.append((kernel, int(threads), int(blocks)))
    return out


def includes_of(rel: str, seen=None):
    """Every kernels/ file `rel` includes, recursively, in first-seen order."""
    seen = [] if seen is None else seen
    for inc in INCLUDE.findall((ROOT / rel).read_text()):
        if inc not in seen:
            if not (ROOT / inc).is_file():
                raise EntryError(f"{rel} includes {inc}, which does not exist")
            seen.append(inc)
            includes_of(inc, seen)
    return seen


def cpp_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def cpp_family_header(family, path, data) -> str:
    rel = path.relative_to(ROOT)
    lines = [f"// Generated by cmake/op_entries.py from {rel}: edit the entry, not this file.",
             "#pragma once", "", '#include "kernels/catalogue.h"', '#include "kernels/embedded_sources.h"',
             "", "namespace ligerd::kernels::entry {"]
    source = data.get("source")
    headers = includes_of(source) if source else []
    for op in data["op"]:
        name = op["name"]
        tensors = op["tensors"]
        scalars = scalar_names(op)
        lines += ["", f"// {name}: {op['doc'].strip()}", f"namespace {name} {{",
                  f"inline constexpr std::string_view kName = {cpp_string(name)};"]
        lines.append("// Tensor positions: " + ", ".join(f"{t['name']} {t['shape']}" for t in tensors))
        lines.append("struct T {")
        lines += [f"  static constexpr int {t['name']} = {i};" for i, t in enumerate(tensors)]
        lines += [f"  static constexpr int kCount = {len(tensors)};", "};", "struct S {"]
        lines += [f"  static constexpr int {s} = {i};" for i, s in enumerate(scalars)]
        lines += [f"  static constexpr int kCount = {len(scalars)};", "};"]
        b = bounds(op)
        if b:
            lines.append("// Launch bounds of the kernels (NVRTC gets them as -DLIGERD_LB_<KEY>):")
            lines.append("inline constexpr LaunchBound kBounds[] = {")
            lines += [f"    {{{cpp_string(k)}, {t}, {m}}}," for k, t, m in b]
            lines.append("};")
        lines.append("inline OpSpec BaseSpec() {")
        lines.append("  OpSpec s;")
        lines.append(f"  s.name = std::string(kName);")
        lines.append(f"  s.doc = {cpp_string(op['doc'].strip())};")
        lines.append("  s.tensors = {")
        for t in tensors:
            dts = DTYPE_SETS.get(t["dtypes"], t["dtypes"]) if isinstance(t["dtypes"], str) else t["dtypes"]
            dlist = ", ".join(CPP_DTYPE[d] for d in dts)
            lines.append(f"      {{{cpp_string(t['name'])}, {str(t['role'] == 'output').lower()}, "
                         f"{str(bool(t.get('optional', False))).lower()}, {{{dlist}}}, "
                         f"{cpp_string(t.get('may_alias', ''))}}},")
        lines.append("  };")
        lines.append("  s.scalars = {" + ", ".join(cpp_string(x) for x in scalars) + "};")
        if source:
            lines.append(f"  s.main = {{{cpp_string(source)}, EmbeddedSource({cpp_string(source)})}};")
            lines.append("  s.headers = {")
            lines += [f"      {{{cpp_string(h)}, EmbeddedSource({cpp_string(h)})}}," for h in headers]
            lines.append("  };")
            opts = ["--std=c++17"] + list(op.get("options", []))
            opts += [f"-DLIGERD_LB_{k.upper()}=__launch_bounds__({t}" + (f", {m})" if m else ")")
                     for k, t, m in b]
            lines.append("  s.options = {" + ", ".join(cpp_string(o) for o in opts) + "};")
        lines.append("  return s;")
        lines.append("}")
        lines.append(f"}}  // namespace {name}")
    lines += ["", "}  // namespace ligerd::kernels::entry", ""]
    return "\n".join(lines)


def cpp_all_ops(families) -> str:
    ops = [op["name"] for _, _, data in families for op in data["op"]]
    lines = ["// Generated by cmake/op_entries.py from kernels/ops/*.toml: edit the entries, not this file.",
             "// One accessor per op entry; each is defined in its family's kernels/ops/<family>.cc",
             "// (LIGERD_DEFINE_OP): an entry whose op has no definition does not link.",
             "#pragma once", "", "#include <vector>", "", '#include "kernels/catalogue.h"', "",
             "namespace ligerd::kernels {", ""]
    lines += [f"const OpSpec& OpSpec_{n}();" for n in ops]
    lines += ["", "// Every op, in entry order (file name, then order in the file).",
              "inline std::vector<const OpSpec*> AllOpsList() {", "  return {"]
    lines += [f"      &OpSpec_{n}()," for n in ops]
    lines += ["  };", "}", "", "}  // namespace ligerd::kernels", ""]
    return "\n".join(lines)


def python_module(families) -> str:
    lines = ['"""Generated by cmake/op_entries.py from kernels/ops/*.toml: edit the entries, not this file',
             "(tests/python/test_op_entries.py checks that it is up to date).",
             "",
             "Per executor op: its tensors as (name, role, optional, may_alias) and its scalars, in the",
             "order the executor takes them; ligerd._backend.call(op, **named) puts named arguments",
             'in that order."""', "", "ENTRIES = {"]
    for _, _, data in families:
        for op in data["op"]:
            ts = ", ".join(f"({t['name']!r}, {t['role']!r}, {bool(t.get('optional', False))}, "
                           f"{t.get('may_alias', '')!r})" for t in op["tensors"])
            ss = ", ".join(repr(s) for s in scalar_names(op))
            lines.append(f"    {op['name']!r}: (({ts},), ({ss}{',' if len(scalar_names(op)) == 1 else ''})),")
    lines += ["}", ""]
    return "\n".join(lines)


def nvrtc_sources(families):
    out = []
    for _, _, data in families:
        if "source" in data:
            for f in [data["source"], *includes_of(data["source"])]:
                if f not in out:
                    out.append(f)
    return out


def write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("cpp").add_argument("dir", type=Path)
    sub.add_parser("python").add_argument("file", type=Path)
    sub.add_parser("sources")
    sub.add_parser("check").add_argument("file", type=Path)
    args = ap.parse_args(argv)
    try:
        families = load_families()
    except (EntryError, tomllib.TOMLDecodeError) as e:
        print(f"op_entries: {e}", file=sys.stderr)
        return 2
    if args.cmd == "cpp":
        for family, path, data in families:
            write_if_changed(args.dir / "kernels/ops/entries" / f"{family}.h", cpp_family_header(family, path, data))
        write_if_changed(args.dir / "kernels/ops/entries/all_ops.h", cpp_all_ops(families))
    elif args.cmd == "python":
        write_if_changed(args.file, python_module(families))
    elif args.cmd == "sources":
        print("\n".join(nvrtc_sources(families)))
    elif args.cmd == "check":
        if not args.file.is_file() or args.file.read_text() != python_module(families):
            print(f"op_entries: {args.file} is out of date: run python3 cmake/op_entries.py python {args.file}",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
