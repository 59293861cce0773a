"""HTML and LaTeX reports."""
