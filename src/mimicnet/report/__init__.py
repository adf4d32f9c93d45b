"""Reports: tables, figures and one self-contained HTML page per results folder, from the run index
(report.py for the main study, study.py for the fixed-arm studies). Imports every layer below but cli."""
