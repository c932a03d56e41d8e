"""Subgraphs a compiler lowers by a rule of its own instead of node by node: the GRU update of
the WaveRNN (docs/model.md, "The GRU step"), recognised by its shape.

A `GruGates` is a blend h' = u ∘ h + (1 − u) ∘ e with

    u = σ(a_u + v_u),  r = σ(a_r + v_r),  e = tanh(r ∘ a_e + v_e),
    a_g = (P + bR)[starts[g] ...]          P = R @ x, one product, bR a vector weight
    v_g = terms_g + k_g                    terms_g: sums of column(I, j) · lookup(const, i)

where k_g is a slice of a per-step input `k`, or of `k0 + alpha · (k1 − k0)` (inputs k0, k1,
scalar alpha: the linear upsampling of the conditioning). jitvoc.emit.cell evaluates it as the
hand-written loop does (gate units, the folded per-frame rows, the monic polynomials and their
shift, one division for the blend), which needs P in gate units: the rule holds only where P's
rows reach no other node but the gates of GruGates. Pure functions over the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

from .graph import Cell, Node
from .schedule import arguments


@dataclass(frozen=True, eq=False)
class GruGates:
    """One recognised GRU update (see the module docstring). k[g] is (base, offset): base an
    input node (k) or the node k0 + alpha · (k1 − k0), whose parts are `linear`."""
    blend: Node
    h: Node
    product: Node
    bias: Node
    starts: tuple
    terms: tuple
    k: tuple
    linear: tuple | None


def gru_gates(cell: Cell) -> dict:
    """blend node -> GruGates of every recognised GRU update whose product reaches nothing else."""
    found = {}
    for node in cell.nodes:
        rule = _blend(cell, node)
        if rule is not None:
            found[node] = rule
    users = _users(cell)
    gates = {}
    for rule in found.values():
        gates.setdefault(rule.product, set()).update(_gate_nodes(rule))
    private = {p for p, nodes in gates.items() if _reaches_only(users, p, nodes)}
    return {n: r for n, r in found.items() if r.product in private}


def reads(cell: Cell, rule: GruGates) -> set:
    """What the lowering of a rule reads: the product, the bias, h, the terms' columns and
    lookup indices, the conditioning's inputs."""
    out = {rule.product, rule.bias, rule.h, *(rule.linear or (rule.k[0][0],))}
    todo = list(rule.terms)
    while todo:
        node = todo.pop()
        if node.op == "mul":
            out.update((node.args[0], node.args[1].args[1]))
        else:   # add, take, ref (_terms)
            todo.extend(arguments(cell, node))
    return out


def absorbed(cell: Cell, rules) -> set:
    """The nodes between each rule's blend and what it reads (reads): computed by the
    lowering itself, never on their own."""
    inner = set()
    for rule in rules:
        stop, todo = reads(cell, rule), list(arguments(cell, rule.blend))
        while todo:
            node = todo.pop()
            if node in stop or node in inner:
                continue
            inner.add(node)
            todo.extend(arguments(cell, node))
    return inner


def slice_of(cell: Cell, node: Node) -> tuple:
    """(base, offset): the node a chain of slices (and refs) reads, and where."""
    offset = 0
    while node.op in ("take", "ref"):
        if node.op == "ref":
            node = cell.bindings[node.name]
            continue
        offset, node = offset + node.attr("start"), node.args[0]
    return node, offset


def _blend(cell: Cell, node: Node):
    """GruGates when `node` is u ∘ h + (1 − u) ∘ e of the module docstring, else None."""
    if node.op != "add" or not all(a.op == "mul" for a in node.args):
        return None
    (u, h), (keep, e) = (a.args for a in node.args)
    if keep.op != "sub" or not _is_one(keep.args[0]) or keep.args[1] is not u:
        return None
    if u.op != "sigmoid" or e.op != "tanh" or u.args[0].op != "add" or e.args[0].op != "add":
        return None
    ru, re = u.args[0].args, e.args[0].args
    if re[0].op != "mul" or re[0].args[0].op != "sigmoid" or re[0].args[0].args[0].op != "add":
        return None
    a = (ru[0], re[0].args[0].args[0].args[0], re[0].args[1])
    v = (ru[1], re[0].args[0].args[0].args[1], re[1])
    return _gates(cell, node, h, a, v)


def _gates(cell: Cell, blend: Node, h: Node, a: tuple, v: tuple):
    sums = [slice_of(cell, x) for x in a]
    if len({s for s, _ in sums}) != 1:
        return None
    total = sums[0][0]
    if total.op != "add" or total.args[0].op != "matvec" or total.args[1].op != "weight":
        return None
    if any(x.op != "add" or not _terms(cell, x.args[0]) for x in v):
        return None
    k = tuple(slice_of(cell, x.args[1]) for x in v)
    if len({base for base, _ in k}) != 1:
        return None
    linear = _linear(k[0][0])
    if k[0][0].op != "input" and linear is None:
        return None
    return GruGates(blend=blend, h=h, product=total.args[0], bias=total.args[1],
                    starts=tuple(o for _, o in sums), terms=tuple(x.args[0] for x in v), k=k,
                    linear=linear)


def _terms(cell: Cell, node: Node) -> bool:
    """A sum (through slices) of column(I, j) · lookup(const, i) products."""
    node, _ = slice_of(cell, node)
    if node.op == "add":
        return all(_terms(cell, x) for x in node.args)
    return (node.op == "mul" and slice_of(cell, node.args[0])[0].op == "column"
            and node.args[1].op == "lookup" and node.args[1].args[0].op == "const")


def _linear(node: Node):
    """(k0, k1, alpha) when node is k0 + alpha · (k1 − k0) of inputs, else None."""
    if node.op != "add" or node.args[1].op != "mul":
        return None
    k0, (alpha, diff) = node.args[0], node.args[1].args
    if diff.op != "sub" or diff.args[1] is not k0 or alpha.shape != ():
        return None
    parts = (k0, diff.args[0], alpha)
    return parts if all(p.op == "input" for p in parts) else None


def _is_one(node: Node) -> bool:
    return node.op == "const" and node.shape == () and float(node.attr("value")) == 1.0


def _users(cell: Cell) -> dict:
    """node -> the nodes using it; None for a state's update or an output."""
    users = {}
    for node in cell.nodes:
        for arg in arguments(cell, node):
            users.setdefault(arg, []).append(node)
    for node in (*cell.update.values(), *cell.outputs.values()):
        users.setdefault(node, []).append(None)
    return users


def _gate_nodes(rule: GruGates) -> set:
    """The nodes of a rule that read slices of P + bR: a_u + v_u, a_r + v_r, r ∘ a_e."""
    u, e = rule.blend.args[0].args[0], rule.blend.args[1].args[1]
    r_ae = e.args[0].args[0]
    return {u.args[0], r_ae.args[0].args[0], r_ae}


def _reaches_only(users: dict, product: Node, allowed: set) -> bool:
    """Whether product's values flow (through P + bR and slices) only into `allowed`."""
    todo, first = [product], True
    while todo:
        node = todo.pop()
        for user in users.get(node, []):
            if user is None:
                return False
            if user in allowed:
                continue
            if not (first or user.op in ("take", "ref")):
                return False
            if first and (user.op != "add" or user.args[0] is not product):
                return False
            todo.append(user)
        first = False
    return True
