"""Everything that imports Ray lives in this package (spec/space are Ray-free and validated first)."""
