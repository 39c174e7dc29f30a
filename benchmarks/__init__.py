"""Benchmarks of cnnviz_widgets against one forward pass, the tutorials and peers; see run.py."""
