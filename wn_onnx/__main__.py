from wn_onnx.cli import main

main()
