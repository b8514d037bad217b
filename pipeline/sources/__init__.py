"""Readers of weight files: GGUF (``gguf_file``, its tokenizer ``gguf_tokenizer``), Hugging Face
safetensors directories (``hf_dir``) and single files (``tensor_files``), LiteRT-LM and TFLite
(``litertlm``, ``tflite``, on ``flatbuffer_bounds``; the ``litert`` extra), and the text report of
``mlc-mtp inspect`` (``describe``)."""
