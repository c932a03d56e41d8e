"""Recurrent cells as data (docs/cells.md): the language (graph.py), cells written in it
(library.py), the scheduler's analysis (schedule.py) and the subgraphs lowered by rules
(rules.py). Below the stages: numpy and jitvoc.errors
(and jitvoc.representation for the WaveRNN decode tables) only."""
from .graph import (DRAW_STREAMS, FLOAT, INDEX, Cell, CellBuilder, Node, Rows, add, affine, column,
                    concat, const, exp, lookup, matvec, mul, relu, sample, sigmoid, softmax, split,
                    sub, take, tanh)
from .library import gilr, gru, lstm, named, sru, wavernn, wavernn_inputs, wavernn_teacher

__all__ = ["DRAW_STREAMS", "FLOAT", "INDEX", "Cell", "CellBuilder", "Node", "Rows", "add", "affine",
           "column", "concat", "const", "exp", "lookup", "matvec", "mul", "relu", "sample",
           "sigmoid", "softmax", "split", "sub", "take", "tanh", "gilr", "gru", "lstm", "named",
           "sru", "wavernn", "wavernn_inputs", "wavernn_teacher"]
