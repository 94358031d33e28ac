"""The ``wn-onnx`` command line."""


def main() -> None:
    from wn_onnx.cli.app import run

    run()
