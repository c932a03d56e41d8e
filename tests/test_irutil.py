"""irutil's shared vector constants: one object per text, the text of a new constant."""
from llvmlite import ir

from jitvoc.emit.irutil import f32, i32, repeated, vec


def test_repeated_constants_are_shared_and_print_as_new_ones():
    for typ, value in ((vec(f32, 16), 1.5), (vec(f32, 16), -0.0), (vec(f32, 16), 0.0),
                       (vec(i32, 8), -0x800000), (vec(f32, 4), ir.Undefined)):
        fresh = ir.Constant(typ, [value] * typ.count) if value is not ir.Undefined else \
            ir.Constant(typ, value)
        assert str(repeated(typ, value)) == str(fresh)
        assert repeated(typ, value) is repeated(typ, value)
    # equal numbers of different texts stay apart; the same text of another width does too
    assert str(repeated(vec(f32, 16), -0.0)) != str(repeated(vec(f32, 16), 0.0))
    assert repeated(vec(f32, 8), 1.5) is not repeated(vec(f32, 16), 1.5)
