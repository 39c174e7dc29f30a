"""Thin ipywidgets + bqplot views over cnnviz_widgets.core."""
