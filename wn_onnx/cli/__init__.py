"""The ``wn-onnx`` command line."""


def main() -> None:
    try:
        from wn_onnx.cli.app import run
    except KeyboardInterrupt:  # Ctrl-C while the imports load: no import traceback
        raise SystemExit(130) from None
    run()
