"""Schedule a cell (jitvoc.cells) for one compiled loop over a sequence: the data the emitter
(jitvoc.emit.cell) writes code from and the runner (jitvoc.cellrun) feeds.

The three optimizations of issue 13, applied to the analysis of jitvoc.cells.schedule:

- products that share an input vector are *stacked*: their matrices joined by rows into one
  matrix, one kernel (a `Product`; the planner chooses that kernel per stacked matrix, as for
  any matrix, when the runner builds it with build_matvec);
- products of per-step inputs are *hoisted*: computed for HOIST_VECTORS steps at a time before
  those steps, by one B-vector product per stack, and read by the loop one row per step;
- the element-wise nodes of a step are *fused* into the passes of schedule.step: a pass is one
  sweep per vector length over its roots (values needed after the pass: inputs of products,
  values of later passes, state updates, outputs), every other node evaluated in registers.
  Slices (`take`) are offsets, not copies, and nodes known before the loop (a bias added to a
  hoisted product) are computed where they are used.

Two rules of the kernels' own: a bias add (and a relu after it) that is an in-loop product's
only use becomes its kernel's epilogue (CellPlan.epilogues), and an input vector is quantized
once per step for every product that reads it in one format (CellPlan.codes).

Draws (`sample`, 256 logits: jitvoc.emit.draw) are barriers like products: a `Draw` reads its
logits in place and stores the class (int32) in its slot (a `softmax`: its 256 probabilities);
`lookup` reads a constant or vector weight table at an int32 state, input or class, `column` a
matrix column passed as a vector. What is
not compiled (int32 vectors, other lookups) is refused with a CellError when the
cell is planned.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..cells import rules, schedule
from . import matvec
from ..cells.graph import INDEX, Cell, Node
from ..contracts import PointerTable
from ..errors import CellError
from ..quant import ACTIVATION_BITS, FixedPoint

COMPILED_OPS = ("input", "state", "weight", "const", "ref", "add", "sub", "mul", "neg",
                "affine", "sigmoid", "tanh", "relu", "exp", "matvec", "take", "concat",
                "column", "lookup", "sample", "softmax")
DRAW_CLASSES = 256   # a compiled draw's logits: 16 blocks of 16 (jitvoc.emit.draw)
DRAWS = ("sample", "softmax")   # the ops a `Draw` computes: a class, or the distribution
# Scratch of the draws (shared: one draw at a time): p = exp(l − max l) and the block prefixes.
DRAW_SCRATCH = (("draw.p", DRAW_CLASSES), ("draw.prefix", 16))
ALIGN = 16   # floats: every scratch slot starts on a 64-byte line
MATRIX_ARRAYS = ("W", "index", "panel_ptr", "row_scale", "zcorr")   # per kernel (SPMV, SPMV_CORE)
MATRIX_PARAMS = ("fn", *MATRIX_ARRAYS)     # per hoisted kernel: its float entry point (SPMV)
CORE_PARAMS = ("core", *MATRIX_ARRAYS)     # per in-loop product: its core (SPMV_CORE)
HOIST_VECTORS = 16   # B: steps per call of a hoisted product's B-vector kernel, one chunk
# Per hoisted product of an integer cell, scratch for a chunk: the input rows scaled by 2^frac_t
# (the kernels read them) and each step's 2^−frac_t (the loop multiplies the product by it).
HOISTED_SCRATCH = (".x", ".x_scale")
# Per GRU rule (CellPlan.gru), the rows the loop computes once per frame, recomputed only when
# the conditioning's rows change (cells.Rows): (part, gates) of the blend's length each: the
# gates' bias rows, K_f of the e gate, K_f+1 − K_f (linear upsampling only), in gate units.
GRU_ROWS = (("rows", 3), ("ke", 1), ("dk", 3))


@dataclass(frozen=True, eq=False, kw_only=True)
class Product:
    """One kernel: the products `nodes` of one input vector `source`, their matrices (named
    `weights`) stacked by rows; node i's rows start at offsets[i] of the stacked output."""
    label: str
    nodes: tuple
    source: Node
    weights: tuple
    offsets: tuple
    rows: int
    hoisted: bool

    @property
    def cols(self) -> int:
        return self.source.shape[0]

    def stacked(self, weights: dict) -> np.ndarray:
        """The stacked float32 matrix [rows, cols] from the cell's weights."""
        return np.concatenate([np.asarray(weights[w], np.float32) for w in self.weights])


@dataclass(frozen=True, eq=False, kw_only=True)
class Epilogue:
    """What an in-loop product's kernel does after its sums (emit.spmv's epilogue): adds the
    vector weights `bias` (one per stacked node, joined), then relu; `results`, per stacked
    node, the node whose value the product's output then holds (the bias add, or its relu)."""
    bias: tuple
    relu: bool
    results: tuple


@dataclass(frozen=True, eq=False, kw_only=True)
class Draw:
    """One draw: the class of the `sample` node from its logits (read in place), stored as an
    int32 in the draw's slot `label`; or of a `softmax` node its 256 probabilities, the draw's
    first steps (the slot holds them)."""
    label: str
    node: Node

    @property
    def logits(self) -> Node:
        return self.node.args[0]

    @property
    def stream(self) -> int:
        return self.node.attr("stream")

    @property
    def distribution(self) -> bool:
        """A softmax: the 256 probabilities into the slot, not a class."""
        return self.node.op == "softmax"


@dataclass(frozen=True, eq=False, kw_only=True)
class Pass:
    """Element-wise roots of one pass: (node, where, offset) stores, where ("slot", node) is
    the node's scratch slot, ("next", state) a state's next value and ("output", name) an
    output's row (the last pass), at `offset` floats (a concat's operands); one sweep per
    length."""
    index: int
    roots: tuple

    def sweeps(self) -> dict:
        """length -> the roots of that length, in graph order (a sweep computes them together)."""
        out = {}
        for root in self.roots:
            out.setdefault(size_of(root[0]), []).append(root)
        return out


@dataclass(frozen=True, eq=False, kw_only=True)
class CellPlan:
    """The schedule of a cell: hoisted products (per chunk of HOIST_VECTORS steps), then per
    step `items` (("products", [Product]), ("draws", [Draw]), ("pass", Pass)) in order; scratch
    slots (float offsets, by product or draw label or node) of products, draws and kept nodes;
    `index_limits`, the exclusive bound of every int32 state's values (the tables it indexes);
    `indexed`, the inputs read by no hoisted product (each step reads its row of a table
    through params "rows.NAME": cells.Rows in place); `gru`, the GRU updates lowered by their
    rule (blend -> cells.rules.GruGates) and `gate_unit` the products that dequantize in the
    gates' unit for them; `homes`, kept nodes stored in a state's next value (state, offset)
    instead of a slot (_homes); `epilogues`, product label -> Epilogue: the bias adds (and
    relus) its kernel's epilogue computes (_epilogue), and `results`, each such node -> the
    product node it follows; `codes`, state -> ((label, column), ...): the in-loop products
    that read the codes of that state, or of pieces of its next value, from one buffer
    (_shared_codes; the first reads the state whole); the `params` pointer table the loop
    reads; the
    fixed activation formats (integer dtypes) of the in-loop products' inputs by label
    (covering [−1, 1], or the range given for their matrices: _formats) and of the hoisted
    ones' (no fractional bits: each step's input comes scaled by the power of two that makes it
    cover its max |x_t|)."""
    cell: Cell
    dtype: str
    hoisted: tuple
    items: tuple
    slots: dict
    scratch: int
    index_limits: dict
    params: PointerTable
    formats: dict
    hoisted_format: FixedPoint | None
    name: str
    gru: dict
    gate_unit: frozenset
    indexed: tuple
    homes: dict
    epilogues: dict
    results: dict
    codes: dict

    @property
    def kept(self) -> list:
        """The element-wise nodes stored for later items: in a scratch slot or in a state's
        next value (homes)."""
        return [n for n in self.slots if isinstance(n, Node)] + list(self.homes)

    def kept_in(self, node: Node) -> tuple:
        """Where a kept node is stored: ("next", state) (its home) or ("slot", node)."""
        return ("next", self.homes[node][0]) if node in self.homes else ("slot", node)

    def pass_of(self, node: Node) -> int | None:
        """The pass whose roots store `node` for later items (None: not kept)."""
        where = self.kept_in(node)
        for kind, x in self.items:
            if kind == "pass" and any(r is node and w == where for r, w, _ in x.roots):
                return x.index
        return None

    @property
    def products(self) -> list:
        return [p for kind, x in self.items if kind == "products" for p in x]

    @property
    def draws(self) -> list:
        return [d for kind, x in self.items if kind == "draws" for d in x]

    def draw_of(self, node: Node) -> Draw:
        for d in self.draws:
            if d.node is node:
                return d
        raise CellError(f"{node!r} is drawn by no draw")

    def product_of(self, node: Node) -> tuple:
        """(the Product computing matvec `node` (or the epilogue result `node`), its row offset
        there)."""
        node = self.results.get(node, node)
        for p in (*self.hoisted, *self.products):
            if node in p.nodes:
                return p, p.offsets[p.nodes.index(node)]
        raise CellError(f"{node!r} is computed by no product")


def size_of(node: Node) -> int:
    """Floats a node's value takes: its length, 1 for a scalar."""
    return node.shape[0] if node.shape else 1


def check_compilable(cell: Cell) -> None:
    """CellError for what the compiler does not do: int32 values but scalar states, inputs and
    draws, lookups but of a constant or vector weight at an int32 state, input or draw, draws
    and softmaxes of other than DRAW_CLASSES logits."""
    for node in cell.nodes:
        if node.op not in COMPILED_OPS or node.dtype == INDEX and (
                node.shape or node.op not in ("state", "input", "sample", "ref")):
            raise CellError(f"cell {cell.name}: {node!r} ({node.op}) is not compiled yet; "
                            f"jitvoc.reference.cells.run interprets it")
        if node.op in DRAWS and node.args[0].shape != (DRAW_CLASSES,):
            raise CellError(f"cell {cell.name}: a compiled draw takes {DRAW_CLASSES} logits "
                            f"(16 blocks of 16), got {node.op} of {node.args[0]!r}")
        if node.op == "lookup" and (node.args[0].op not in ("const", "weight") or resolved(
                cell, node.args[1]).op not in ("state", "input", "sample")):
            raise CellError(f"cell {cell.name}: a compiled lookup reads a constant or a vector "
                            f"weight at an int32 state, input or draw, got {node.args!r}")


def resolved(cell: Cell, node: Node) -> Node:
    """The node a chain of refs stands for."""
    while node.op == "ref":
        node = cell.bindings[node.name]
    return node


def index_limits(cell: Cell) -> dict:
    """int32 state or input name -> the exclusive bound its values keep to: the shortest table
    a lookup reads at it (DRAW_CLASSES for an input no lookup reads). CellError where a draw's
    classes or an update could index past a table."""
    limits = {name: None for name, n in cell.states.items() if n.dtype == INDEX}
    inputs = {name: None for name, n in cell.inputs.items() if n.dtype == INDEX}
    for node in cell.nodes:
        if node.op != "lookup":
            continue
        index, size = resolved(cell, node.args[1]), node.args[0].shape[0]
        if index.op == "sample" and size < DRAW_CLASSES:
            raise CellError(f"cell {cell.name}: the table {node.args[0]!r} is indexed by a draw "
                            f"of {DRAW_CLASSES} classes")
        if index.op == "state":
            limits[index.name] = min(size, limits[index.name] or size)
        if index.op == "input":
            inputs[index.name] = min(size, inputs[index.name] or size)
    for name in limits:
        update = resolved(cell, cell.update[name])
        limits[name] = limits[name] or DRAW_CLASSES
        if update.op != "sample" or limits[name] < DRAW_CLASSES:
            raise CellError(f"cell {cell.name}: the int32 state {name!r} must be updated by a "
                            f"draw whose classes every table it indexes has, got {update!r}")
    return limits | {name: limit or DRAW_CLASSES for name, limit in inputs.items()}


def _stacks(cell: Cell, products: list, hoisted: bool, first: int) -> list:
    """Products grouped by input vector, in graph order, labelled p<first>, p<first+1>, ..."""
    by_source = {}
    for node in products:
        by_source.setdefault(node.args[1], []).append(node)
    out = []
    for i, (source, nodes) in enumerate(by_source.items()):
        if hoisted and source.op != "input":
            raise CellError(f"cell {cell.name}: the hoisted product {nodes[0].args[0].name} @ "
                            f"{source!r} must read a declared input (not compiled yet)")
        rows = [n.shape[0] for n in nodes]
        offsets = tuple(int(v) for v in np.cumsum([0] + rows[:-1]))
        out.append(Product(label=f"p{first + i}", nodes=tuple(nodes), source=source,
                           weights=tuple(n.args[0].name for n in nodes), offsets=offsets,
                           rows=sum(rows), hoisted=hoisted))
    return out


def plan(cell: Cell, dtype: str = "float32", ranges: dict | None = None) -> CellPlan:
    """The schedule of `cell` with its products in `dtype` (float32, int8, int16; see
    docs/cells.md, "Compiling a cell"); `ranges`: matrix name -> max |x| of the input of an
    in-loop product of it (integer dtypes; default 1)."""
    check_compilable(cell)
    if dtype not in ("float32", *ACTIVATION_BITS):
        raise CellError(f"a cell's dtype is float32, int8 or int16, got {dtype!r}")
    _check_ranges(cell, ranges or {})
    inside = schedule.recurrent(cell)
    hoisted = _stacks(cell, [n for n in cell.nodes if n.op == "matvec" and n not in inside],
                      True, 0)
    groups, pass_of = _groups(cell, len(hoisted))
    in_loop = [p for kind, x in groups if kind == "products" for p in x]
    gru = _gru_rules(cell, in_loop)
    epilogues = _epilogues(cell, in_loop, gru)
    results = {r: n for p in in_loop if p.label in epilogues
               for n, r in zip(p.nodes, epilogues[p.label].results)}
    groups, pass_of = _without(groups, pass_of, _epilogue_nodes(results))
    keep = _materialized(cell, groups, pass_of, rules.absorbed(cell, gru.values()), results)
    homes = _homes(cell, keep)
    items, count = [], 0
    for kind, content in groups:
        if kind != "pass":
            items.append((kind, tuple(content)))
            continue
        roots = [root for n in content if n in keep for root in _pieces(
            n, ("next", homes[n][0]) if n in homes else ("slot", n), homes.get(n, (0, 0))[1])]
        items.append(("pass", Pass(index=count, roots=tuple(roots))))
        count += 1
    last = items[-1][1]
    finals = [r for name, n in cell.update.items() for r in _pieces(n, ("next", name), 0)
              if homes.get(r[0]) != (name, r[2])]
    finals += [r for name, n in cell.outputs.items() for r in _pieces(n, ("output", name), 0)]
    items[-1] = ("pass", Pass(index=last.index, roots=last.roots + tuple(finals)))
    draws = [d for kind, x in items if kind == "draws" for d in x]
    slots, scratch = _slots(hoisted, draws,
                            [n for n in cell.nodes if n in keep and n not in homes],
                            dtype != "float32",
                            list(gru.values()))
    bits = ACTIVATION_BITS.get(dtype)
    formats = {p.label: bits and _format(p, bits, ranges or {})
               for kind, x in items if kind == "products" for p in x}
    hoisted_format = bits and FixedPoint(bits, 0, signed=True)
    indexed = tuple(n for n in cell.inputs if all(p.source.name != n for p in hoisted))
    params = _params(cell, hoisted, in_loop, any(not d.distribution for d in draws), indexed,
                     epilogues)
    return CellPlan(cell=cell, dtype=dtype, hoisted=tuple(hoisted), items=tuple(items),
                    slots=slots, scratch=scratch, index_limits=index_limits(cell),
                    params=params, formats=formats, hoisted_format=hoisted_format,
                    name=f"cell_{cell.name}_{_fingerprint(cell, dtype, ranges)}", gru=gru,
                    gate_unit=frozenset(p.label for p in in_loop if bits and any(
                        r.product in p.nodes for r in gru.values())), indexed=indexed,
                    homes=homes, epilogues=epilogues, results=results,
                    codes=_shared_codes(cell, items, homes, formats))


def _epilogues(cell: Cell, in_loop: list, gru: dict) -> dict:
    """label -> Epilogue of the in-loop products whose every node's one use is the addition of
    a vector weight (a bias), which then becomes the kernel's epilogue, as does a relu that is
    that addition's one use after every node (a GRU rule's product keeps its own form)."""
    users = _users(cell)
    out = {}
    for p in in_loop:
        adds = [_sole_user(users, n) for n in p.nodes]
        if any(r.product in p.nodes for r in gru.values()) or not all(
                a is not None and _bias(a, n) for a, n in zip(adds, p.nodes)):
            continue
        relus = [_sole_user(users, a) for a in adds]
        relu = all(r is not None and r.op == "relu" for r in relus)
        out[p.label] = Epilogue(bias=tuple(_bias(a, n).name for a, n in zip(adds, p.nodes)),
                                relu=relu, results=tuple(relus if relu else adds))
    return out


def _users(cell: Cell) -> dict:
    """node -> the nodes that read it (None for each state update or output it is)."""
    users = {}
    for node in cell.nodes:
        for arg in schedule.arguments(cell, node):
            users.setdefault(arg, []).append(node)
    for root in (*cell.update.values(), *cell.outputs.values()):
        users.setdefault(root, []).append(None)
    return users


def _sole_user(users: dict, node: Node) -> Node | None:
    found = users.get(node, [])
    return found[0] if len(found) == 1 else None


def _bias(add: Node, node: Node) -> Node | None:
    """The vector weight that `add` adds to `node` (None: `add` is no such addition)."""
    if add.op != "add":
        return None
    other = add.args[1] if add.args[0] is node else add.args[0]
    return other if other.op == "weight" and other.shape == node.shape else None


def _epilogue_nodes(results: dict) -> set:
    """The nodes kernels' epilogues compute: every result (a bias add, or a relu and its add)."""
    return {n for r in results for n in ((r, r.args[0]) if r.op == "relu" else (r,))}


def _without(groups: list, pass_of: dict, nodes: set) -> tuple:
    """groups and pass_of with `nodes` (computed by kernels' epilogues) out of the passes."""
    groups = [(k, [n for n in x if n not in nodes] if k == "pass" else x) for k, x in groups]
    return groups, {n: i for n, i in pass_of.items() if n not in nodes}


def _shared_codes(cell: Cell, items: list, homes: dict, formats: dict) -> dict:
    """state -> ((label, column), ...): an integer input vector quantized once per step and
    shared by every product that reads it in the same format. The products reading a state
    (whole, first; or a slice) and those reading pieces of its next value (its homes, or
    slices of them) read one buffer of codes: the passes that store the next value write
    its codes too, which are the state's codes at the next step (the loop computes them
    from the initial state once per call). Only where every reader of the state runs before
    the first pass that stores its next value, and with two or more readers."""
    out = {}
    for name, state in cell.states.items():
        readers, first_store = [], None
        for at, (kind, content) in enumerate(items):
            if kind == "pass" and first_store is None and any(
                    w == ("next", name) for _, w, _ in content.roots):
                first_store = at
            for p in content if kind == "products" else ():
                base, column = _view(cell, p.source)
                if base is state and first_store is None:
                    readers.append((p, column))
                elif homes.get(base, (None,))[0] == name:
                    readers.append((p, homes[base][1] + column))
        whole = [p for p, _ in readers
                 if _view(cell, p.source) == (state, 0) and p.cols == size_of(state)]
        fmt = whole and formats[whole[0].label]
        sharing = [(p.label, c) for p, c in readers if fmt and formats[p.label] == fmt]
        if len(sharing) > 1:
            first = (whole[0].label, 0)
            out[name] = (first, *(r for r in sharing if r != first))
    return out


def _view(cell: Cell, node: Node) -> tuple:
    """(the node a chain of slices and refs reads, the column it starts at)."""
    column = 0
    while node.op in ("take", "ref"):
        column += node.attr("start") if node.op == "take" else 0
        node = schedule.arguments(cell, node)[0]
    return node, column


def _homes(cell: Cell, keep: set) -> dict:
    """Kept node -> (state, offset) where it is (a piece of) that state's update: stored once,
    in the state's next value, where later items read it (no copy into the next value at the
    end of the step). A node that is a piece of several updates lives in the first."""
    homes = {}
    for name, update in cell.update.items():
        for node, _, offset in _pieces(update, ("next", name), 0):
            if node in keep and node.shape and node not in homes:
                homes[node] = (name, offset)
    return homes


def _gru_rules(cell: Cell, in_loop: list) -> dict:
    """The GRU updates (cells.rules.gru_gates) lowered as the hand-written loop computes them:
    those whose product is an in-loop kernel of its own (an integer one then dequantizes in the
    gates' unit, mathfn.GATE_UNIT)."""
    alone = {p.nodes[0] for p in in_loop if len(p.nodes) == 1}
    return {n: r for n, r in rules.gru_gates(cell).items() if r.product in alone}


def _check_ranges(cell: Cell, ranges: dict) -> None:
    if not isinstance(ranges, dict):
        raise CellError(f"cell {cell.name}: ranges must be a dict of matrix name -> max |x|")
    for name, value in ranges.items():
        node = cell.weights.get(name)
        if node is None or len(node.shape) != 2:
            raise CellError(f"cell {cell.name}: ranges name {name!r}, not a weight matrix")
        if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise CellError(f"cell {cell.name}: the range of {name!r} must be a positive "
                            f"number, got {value!r}")


def _format(product: Product, bits: int, ranges: dict) -> FixedPoint:
    """The fixed format of an in-loop product's input: covering the largest range of its
    matrices (default 1: a GRU's or LSTM's state); unsigned for an int8 relu output, as the
    vocoder's O2 and O4 (int16 kernels take signed activations)."""
    signed = bits == 16 or product.source.op != "relu"
    return FixedPoint.covering(max(ranges.get(w, 1.0) for w in product.weights), bits,
                               signed=signed)


def _groups(cell: Cell, first: int) -> tuple:
    """schedule.step as [("products", [Product]) | ("draws", [Draw]) | ("pass", nodes)],
    ending with a pass; and the pass index of every in-loop element-wise node."""
    groups, pass_of, drawn = [], {}, 0
    for kind, nodes in schedule.step(cell):
        if kind == "barrier":
            stacks = _stacks(cell, [n for n in nodes if n.op == "matvec"], False, first)
            draws = [Draw(label=f"d{drawn + i}", node=n)
                     for i, n in enumerate(n for n in nodes if n.op in DRAWS)]
            first, drawn = first + len(stacks), drawn + len(draws)
            groups += [(k, v) for k, v in (("products", stacks), ("draws", draws)) if v]
        else:
            index = sum(k == "pass" for k, _ in groups)
            pass_of.update((n, index) for n in nodes)
            groups.append(("pass", nodes))
    if not groups or groups[-1][0] != "pass":
        groups.append(("pass", []))
    return groups, pass_of


def _materialized(cell: Cell, groups: list, pass_of: dict, absorbed: set,
                  results: dict) -> set:
    """In-loop element-wise nodes kept in a scratch slot: used by a later pass, or by a product
    that cannot read them in place. Every other node is computed where it is used; a node
    inside a rule's subgraph (`absorbed`: the rule reads what it needs itself) uses none; an
    epilogue's result (`results`) lies in its product's output."""
    keep = set()
    for node in cell.nodes:
        if node in absorbed:
            continue
        for arg in schedule.arguments(cell, node) if node.op != "matvec" else ():
            if arg in pass_of and pass_of.get(node, -1) > pass_of[arg]:
                keep.add(arg)
    for kind, barriers in groups:
        for x in barriers if kind != "pass" else ():
            keep.update(_unaddressable(cell, x.source if kind == "products" else x.logits,
                                       results))
    for node in cell.nodes:
        for arg in schedule.arguments(cell, node):
            later = arg in keep and pass_of.get(node, -1) > pass_of[arg]
            if arg.op == "concat" and node.op not in ("matvec", "sample", "concat") and not later:
                raise CellError(f"cell {cell.name}: {arg!r} is used element-wise in its own "
                                f"pass; a concat is compiled as a product's input, a state "
                                f"update, an output or a later pass's operand")
    return keep


def _unaddressable(cell: Cell, source: Node, results: dict) -> list:
    """The node to keep in a slot so that a product can read `source` in place (none when it
    is a state, an input, a product's output (an epilogue's result) or a slice of one)."""
    while source.op in ("take", "ref"):
        source = schedule.arguments(cell, source)[0]
    return [] if source.op in ("state", "input", "matvec") or source in results else [source]


def _pieces(node: Node, where: tuple, offset: int) -> list:
    """A root's (node, where, offset) stores: a concat as its operands at their offsets."""
    if node.op != "concat":
        return [(node, where, offset)]
    out = []
    for arg in node.args:
        out += _pieces(arg, where, offset)
        offset += size_of(arg)
    return out


def _slots(products: list, draws: list, keep: list, integer: bool, gru: list) -> tuple:
    """Scratch offsets (floats, ALIGN-aligned) of hoisted products (HOIST_VECTORS steps, and
    for an integer cell their scaled input rows and scales, label + ".x" and label +
    ".x_scale"; an in-loop product's output lies in the loop's stack), draws (their class,
    and DRAW_SCRATCH), the rows of each GRU rule that change only with its conditioning's rows
    ((blend, part), GRU_ROWS) and kept nodes, and the scratch size."""
    slots, at = {}, 0
    sizes = [(p.label, p.rows * HOIST_VECTORS) for p in products]
    sizes += [(p.label + k, HOIST_VECTORS * (p.cols if k == ".x" else 1))
              for p in products if integer for k in HOISTED_SCRATCH]
    sizes += [(d.label, size_of(d.node)) for d in draws] + list(DRAW_SCRATCH if draws else ())
    sizes += [((r.blend, part), gates * size_of(r.blend)) for r in gru
              for part, gates in GRU_ROWS if r.linear or part != "dk"]
    for key, size in sizes + [(n, size_of(n)) for n in keep]:
        slots[key] = at
        at += -(-size // ALIGN) * ALIGN
    return slots, max(at, ALIGN)


def _params(cell: Cell, hoisted: list, products: list, draws: bool, indexed: tuple,
            epilogues: dict) -> PointerTable:
    """The loop's pointer table; with draws, "counter": int64 [t0, seed] (the generator's);
    per `indexed` input "rows.NAME", int64 [T]: the row of its table each step reads; per
    in-loop product its core and arrays (CORE_PARAMS), with an epilogue "LABEL.bias" (float32
    [rows_padded]: the biases joined, zero-padded)."""
    names = [f"input.{n}" for n in cell.inputs] + [f"rows.{n}" for n in indexed]
    names += [f"output.{n}" for n in cell.outputs]
    names += [f"{k}.{n}" for n in cell.states for k in ("state", "next")]
    names += [f"weight.{n}" for n, w in cell.weights.items() if len(w.shape) < 2]
    names += sorted({column_key(n) for n in cell.nodes if n.op == "column"})
    names += ["counter"] if draws else []
    names += ["scratch"] + [f"{p.label}.{a}" for p in products for a in CORE_PARAMS]
    names += [f"{p.label}.bias" for p in products if p.label in epilogues]
    names += [f"{p.label}.{k}.{a}" for p in hoisted for k in ("B", "1") for a in MATRIX_PARAMS]
    return PointerTable(tuple(names))


def in_loop_kernels(plan: CellPlan, weights: dict, gen) -> dict:
    """label -> the planner's kernel (plan.matvec.Plan) of each in-loop product for `weights`
    (the one compile_cell picks without autotune): for dumps of the loop."""
    out = {}
    for p in plan.products:
        W = p.stacked(weights)
        codes, scale = matvec.quantize_weights(W, plan.dtype)
        fmt = plan.formats[p.label]
        out[p.label] = matvec.build_plan(codes, scale, W != 0, plan.dtype, gen,
                                         x_signed=fmt.signed if fmt else True, inline=True,
                                         x_stride=shared_stride(plan, p.label, out))
    return out


def shared_stride(plan: CellPlan, label: str, kernels: dict) -> int:
    """The stride of shifted tables for an in-loop product that reads another's codes
    (plan.codes): the first reader's x_len (`kernels`: label -> the planner's Plan of those
    built), so that its tables hold the reader's columns (the planner ignores it for kernels
    without such tables); 0 (the kernel's own) for the others."""
    for readers in plan.codes.values():
        if label in dict(readers[1:]):
            return kernels[readers[0][0]].packed.x_len
    return 0


def column_key(node: Node) -> str:
    """The params entry of a `column` node: the matrix column as a vector."""
    return f"column.{node.args[0].name}.{node.attr('index')}"


def _fingerprint(cell: Cell, dtype: str, ranges: dict | None) -> str:
    """A hash of everything the loop's code depends on: the nodes, the dtype and the ranges."""
    index = {n: i for i, n in enumerate(cell.nodes)}
    h = hashlib.sha256(dtype.encode())
    for node in cell.nodes:
        attrs = [(k, v.tobytes().hex() if isinstance(v, np.ndarray) else v)
                 for k, v in node.attrs]
        args = [index[a] for a in schedule.arguments(cell, node)]
        h.update(repr((node.op, args, node.shape, node.dtype, attrs)).encode())
    h.update(repr((list(cell.update), list(cell.outputs))).encode())
    if ranges:
        h.update(repr(sorted(ranges.items())).encode())
    return h.hexdigest()[:16]


def fused(plan: CellPlan, roots) -> list:
    """The element-wise nodes one sweep over `roots` computes in registers (in graph order):
    everything between its roots and what earlier items stored (a root an earlier pass stored
    is read from where it is kept: its slot or its home)."""
    cell, seen = plan.cell, set()
    kept = set(plan.kept)
    stop = kept - {node for node, where, _ in roots if node in kept and where == plan.kept_in(node)}

    def visit(node):
        if node in seen or node.op in schedule.DATA + schedule.BARRIERS or node in stop or (
                node in plan.results):
            return
        seen.add(node)
        for arg in schedule.arguments(cell, node) if node not in plan.gru else ():
            visit(arg)
    for root in roots:
        visit(root[0])
    return [n for n in cell.nodes if n in seen]


def describe(plan: CellPlan, kernels: dict | None = None) -> str:
    """The schedule as text: stacked and hoisted products (with `kernels`: label -> kernel
    names, when built), then per step the products and the passes' sweeps with the nodes each
    fuses and where its roots go."""
    kernels = kernels or {}
    lines = [f"cell {plan.cell.name} ({plan.dtype}): {len(plan.cell.nodes)} nodes, "
             f"loop {plan.name}"]
    for p in plan.hoisted:
        lines.append(f"  hoisted {_product_line(p, kernels)}: before the loop, all steps")
    lines.append("  each step:")
    for kind, content in plan.items:
        if kind == "products":
            lines += [f"    product {_product_line(p, kernels)}{_epilogue_line(plan, p)}"
                      for p in content]
            continue
        if kind == "draws":
            lines += [f"    draw {d.label} = "
                      f"{'softmax' if d.distribution else f'sample(stream {d.stream})'} of "
                      f"{d.logits.name or d.logits.op} [{DRAW_CLASSES}]" for d in content]
            continue
        for length, roots in content.sweeps().items():
            names = [_op_name(plan, n) for n in fused(plan, roots)]
            ops = ", ".join(f"{op} x{names.count(op)}" for op in sorted(set(names)))
            stores = ", ".join(sorted({_where(w) for _, w, _ in roots}))
            lines.append(f"    pass {content.index}, sweep of {length}: {len(names)} nodes "
                         f"fused ({ops or 'copies'}) -> {stores}")
    return "\n".join(lines)


def _epilogue_line(plan: CellPlan, p: Product) -> str:
    ep = plan.epilogues.get(p.label)
    if ep is None:
        return ""
    return f", epilogue + {' + '.join(ep.bias)}{', relu' if ep.relu else ''}"


def _op_name(plan: CellPlan, node: Node) -> str:
    """A node's op, "gru" for the blend of a GRU update lowered by its rule (plan.gru)."""
    return "gru" if node in plan.gru else node.op


def _product_line(p: Product, kernels: dict) -> str:
    what = " + ".join(p.weights)
    stacked = f" ({len(p.nodes)} stacked)" if len(p.nodes) > 1 else ""
    names = kernels.get(p.label)
    using = f", kernel {' / '.join(names)}" if names else ""
    source = p.source.name or p.source.op
    return f"{p.label} = [{what}] @ {source} [{p.rows}x{p.cols}]{stacked}{using}"


def _where(where) -> str:
    kind, key = where
    return f"slot of {key!r}" if kind == "slot" else f"{kind} {key}"
