"""No patch: the quantized model is evaluated as it is."""

from qresafe_exp.patch.base import Patch, PatchContext, PatchResult


class NoPatch(Patch):
    def plan(self, ctx: PatchContext) -> PatchResult:
        return PatchResult(ctx.quantized, {})
