"""Model bundles: each folder here is data (ONNX weights plus a manifest); the modules load
and check them."""
