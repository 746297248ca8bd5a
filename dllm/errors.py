"""User-facing errors. Every one carries one clear sentence; the CLI prints it and exits 2."""


class DllmError(Exception):
    """Base class of every error dllm raises for bad input or an unusable model."""


class ModelLoadError(DllmError):
    """The model path is missing, corrupt, of an unknown family, or in a refused format."""


class TokenizerError(DllmError):
    """The tokenizer files are missing or unusable for what was asked (e.g. text without a tokenizer)."""


class InvalidParamsError(DllmError, ValueError):
    """A SamplingParams field is out of range or names an unknown method."""


class PromptError(DllmError, ValueError):
    """A prompt is empty, too long for the context, or holds token ids outside the vocabulary."""


class UnsupportedError(DllmError):
    """The request asks for a capability this build of dllm does not provide."""


class ConstraintError(InvalidParamsError):
    """An invalid or unsatisfiable regex, JSON schema or grammar."""


class ConstraintBudgetError(ConstraintError):
    """Compiling a constraint went past its state or time budget (the sentence names the part that blew up)."""


class NumericError(DllmError):
    """The model's logits hold NaN or infinity (broken weights, or an overflow in the chosen dtype)."""
