"""The scheduler's analysis of a cell, as pure functions over its graph (jitvoc.plan.cell turns
it into the schedule the code is generated from):

- stacks(cell):  products that share an input vector, which one kernel can compute together;
- hoisted(cell): nodes whose values are known before the loop (they depend on no state and no
  draw): their products become one matrix product over all timesteps;
- step(cell), passes(cell): one step as passes of element-wise nodes, each a sweep that can
  run once the products and draws before it are done, between those products and draws;
- describe(cell): all of it, readable.
"""
from __future__ import annotations

from .graph import Cell, Node

BARRIERS = ("matvec", "sample", "softmax")                  # need a whole vector before any element
DATA = ("input", "state", "weight", "const", "column", "ref")   # no arithmetic of their own


def recurrent(cell: Cell) -> set:
    """The nodes that depend on a state or a draw: they must run inside the loop."""
    inside = set()
    for node in cell.nodes:
        if node.op in ("state", "sample") or any(a in inside for a in arguments(cell, node)):
            inside.add(node)
    return inside


def hoisted(cell: Cell) -> list:
    """The products and element-wise nodes known before the loop (they depend on no state and
    no draw: on per-step inputs, weights and constants only), computed for all timesteps at
    once; the products become matrix-matrix products."""
    inside = recurrent(cell)
    return [n for n in cell.nodes if n not in inside and n.op not in DATA]


def stacks(cell: Cell) -> list:
    """Lists of two or more products with the same input vector, in graph order."""
    by_input = {}
    for node in cell.nodes:
        if node.op == "matvec":
            by_input.setdefault(node.args[1], []).append(node)
    return [group for group in by_input.values() if len(group) > 1]


def step(cell: Cell) -> list:
    """One step of the loop as alternating ("pass", nodes) and ("barrier", nodes) items: each
    pass holds in-loop element-wise nodes that one sweep can run, each barrier the in-loop
    products and draws that need the pass before it whole. A barrier's depth is the number of
    barriers before it on its longest path; a node goes to the latest pass its users allow
    (operands of a barrier of depth d in pass d at most), which leaves the fewest passes for
    this order of barriers."""
    inside = recurrent(cell)
    depth, users = {}, {}
    for node in cell.nodes:
        args = arguments(cell, node)
        depth[node] = max((depth[a] + (a.op in BARRIERS and a in inside) for a in args), default=0)
        for arg in args:
            users.setdefault(arg, []).append(node)
    elementwise = [n for n in cell.nodes if n in inside and n.op not in BARRIERS + DATA]
    latest, last = {}, max(depth.values())
    for node in reversed(elementwise):
        latest[node] = min((latest.get(u, depth[u]) for u in users.get(node, ()) if u in inside),
                           default=last)
    items = []
    for d in range(last + 1):
        items.append(("pass", [n for n in elementwise if latest[n] == d]))
        items.append(("barrier", [n for n in cell.nodes
                                  if n in inside and n.op in BARRIERS and depth[n] == d]))
    return [(kind, nodes) for kind, nodes in items if nodes]


def passes(cell: Cell) -> list:
    """The in-loop element-wise nodes of one step, one list per pass, in order."""
    return [nodes for kind, nodes in step(cell) if kind == "pass"]


def arguments(cell, node) -> tuple:
    """A node's arguments; a ref's is the value bound to it."""
    return (cell.bindings[node.name],) if node.op == "ref" else node.args


def describe(cell: Cell) -> str:
    """The analysis as text: stacks, hoisted nodes, passes."""
    ahead = hoisted(cell)
    lines = [f"cell {cell.name}: {len(cell.nodes)} nodes"]
    for group in stacks(cell):
        products = ", ".join(_product(n) for n in group)
        lines.append(f"  stack: {products} on {_label(group[0].args[1])}")
    products = [_product(n) for n in ahead if n.op == "matvec"]
    lines.append(f"  hoisted: {len(ahead)} nodes, products {', '.join(products) or 'none'}")
    for kind, nodes in step(cell):
        if kind == "pass":
            ops = ", ".join(sorted({n.op for n in nodes}))
            lines.append(f"  pass: {len(nodes)} element-wise nodes ({ops})")
        else:
            lines.append("  then: " + ", ".join(_product(n) if n.op == "matvec"
                                                  else f"sample(stream {n.attr('stream')})"
                                                  for n in nodes))
    return "\n".join(lines)


def _product(node: Node) -> str:
    return f"{node.args[0].name} @ {_label(node.args[1])}"


def _label(node: Node) -> str:
    return node.name or node.op
