"""Logic: decisions on typed models, and the small workflows that apply them through ports."""
