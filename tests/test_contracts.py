"""The declarations of jitvoc.contracts: uses that do not match them fail while the IR is built."""
import numpy as np
import pytest
from llvmlite import ir

from jitvoc import contracts
from jitvoc.contracts import (MATRIX_ARRAYS, PERMUTE_PASS, SPMV_CORE, Field, PointerTable,
                              Record)
from jitvoc.emit.irutil import call, define, f32, i8, i32, i64, signature
from jitvoc.emit.spmv import pass_field
from jitvoc.errors import ContractError
from jitvoc.layout import pack


def _builder():
    fn, a = define(ir.Module(), SPMV_CORE, "k")
    return ir.IRBuilder(fn.append_basic_block("entry")), fn, a


def _core_args(a):
    return {n: getattr(a, n) for n in SPMV_CORE.names}


def test_define_follows_the_declaration():
    _, fn, a = _builder()
    assert fn.name == "k_core" and fn.function_type == signature(SPMV_CORE)
    assert a.x_scale.type == f32 and list(vars(a)) == list(SPMV_CORE.names)


def test_call_checks_names_and_types():
    b, fn, a = _builder()
    call(b, SPMV_CORE, fn, **_core_args(a))
    missing = _core_args(a)
    del missing["bias"]
    with pytest.raises(ContractError, match="missing.*bias"):
        call(b, SPMV_CORE, fn, **missing)
    with pytest.raises(ContractError, match="unknown.*extra"):
        call(b, SPMV_CORE, fn, **_core_args(a), extra=a.y)
    with pytest.raises(ContractError, match="x_scale"):
        call(b, SPMV_CORE, fn, **dict(_core_args(a), x_scale=i64(0)))


def test_c_signatures():
    assert contracts.CELL_RUN.c_signature() == "void(int64_t, void*)"
    assert contracts.CELL_RUN_STREAMS.c_signature() == "void(int64_t, void*, void*)"
    assert contracts.SCAN.c_signature().startswith("void(uintptr_t, ")


def test_pointer_table_takes_every_entry_once():
    table = PointerTable(tuple(f"{m}.{a}" for m in ("gru.R", "out.O1") for a in MATRIX_ARRAYS))
    addresses = {n: i for i, n in enumerate(table.names)}
    assert table.pack(addresses).tolist() == list(range(len(table.names)))
    with pytest.raises(ContractError, match="missing"):
        table.pack({k: v for k, v in addresses.items() if k != "gru.R.W"})
    with pytest.raises(ContractError, match="no entry"):
        table.slot("gru.R.bias")


def test_records():
    rec = np.zeros(PERMUTE_PASS.size, np.uint8)
    PERMUTE_PASS.put(rec, "offset", 130)
    assert rec[72:76].view("<i4")[0] == 130
    with pytest.raises(ContractError, match="takes 64 values"):
        PERMUTE_PASS.put(rec, "byte_index", [1, 2])
    with pytest.raises(ContractError, match="overlaps"):
        Record("bad", 8, (Field("a", 0, "<i4"), Field("b", 2, "<i4")))


def test_permute_fields_read_with_their_size():
    b, _, a = _builder()
    pass_field(b, a.index, i64(0), "offset", i32)
    with pytest.raises(ContractError, match="4 bytes"):
        pass_field(b, a.index, i64(0), "offset", i8)
    with pytest.raises(ContractError, match="no field"):
        pass_field(b, a.index, i64(0), "window", i32)


def test_packed_arrays_have_the_declared_types():
    w = np.zeros((16, 8), np.int8)
    w[0, [1, 2, 5, 7]] = 1
    gathering, contiguous = pack(w, (16, 1), 4), pack(w, (16, 4), 4)
    assert gathering.kernel_index().dtype == np.dtype(contracts.PANEL_OFFSET)
    assert contiguous.kernel_index().dtype == np.dtype(contracts.PANEL_COLUMN)
    assert gathering.panel_ptr.dtype == np.dtype(contracts.PANEL_PTR)
