"""``python -m qresafe_exp.llamacpp.server ARGS``: llama-cpp-python's OpenAI-compatible server
(``python -m llama_cpp.server``, the same arguments) with its model loaded as every llama.cpp model of the
project is, under ``repacking_off_on_amx`` (on a CPU with AMX the server would crash on its first request)."""

from qresafe_exp.llamacpp import repacking_off_on_amx


def main() -> None:
    from llama_cpp.server.__main__ import main as serve

    # the whole server runs inside it: the model loads at start-up and again if a request switches models
    with repacking_off_on_amx():
        serve()


if __name__ == "__main__":
    main()
