"""What evaluation tells people: the model card (HTML and Markdown)."""
