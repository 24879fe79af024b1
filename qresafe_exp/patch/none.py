"""No patch: the quantized model is evaluated as it is."""

from qresafe_exp.patch.base import Patch, PatchContext, PatchResult


class NoPatch(Patch):
    def apply(self, ctx: PatchContext) -> PatchResult:
        return PatchResult(ctx.quantized, {})
