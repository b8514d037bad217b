"""Helpers shared by the tests (not tests themselves): tiny random models (:mod:`.gemma3`, :mod:`.gemma4`),
pipeline configs and tiny package builds (:mod:`.packages`), transformers-driven reference runs
(:mod:`.references`), stand-in drafters (:mod:`.stand_ins`), LiteRT files (:mod:`.litert`), attention
kernel cases (:mod:`.attention_cases`) and the OpenCL (PoCL) and WebGPU harnesses (:mod:`.opencl`,
:mod:`.webgpu`).  Test modules import from here, never from one another."""
