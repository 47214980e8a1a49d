"""TensorRT engines: building (TensorRT 10/11, TensorRT-RTX), caching, and the export-to-engine pipeline."""
