"""Weight import and export: Hugging Face safetensors directories and GGUF files."""
