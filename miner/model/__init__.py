"""Local Hugging Face models and their units (sites x layers x dimensions), shared by mining and reports."""
