"""The report: the thesis's tables and figures, Grad-CAM and statistics, rebuilt from run files."""
