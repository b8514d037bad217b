"""Run packaged models: the engine over the TVM VM, sampling, generation, chat and benchmarks."""
