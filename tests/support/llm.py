"""LLM backends for the tests."""

from hive.llm import LLMBackend, LLMError


class FailingBackend(LLMBackend):
    """Every call fails, as an unavailable model would."""

    def generate(self, history, *, deadline):
        raise LLMError("the model is unavailable")
