"""Human feedback: the feedback store, the labeling web app, annotator agreement, rankings -> pairs.

Library API (each one call; see docs/feedback.md):
    db = open_database("runs/feedback/feedback.db")            # or a postgresql+psycopg:// URL
    import_generations(db, "completions.jsonl", "demo", criterion="harmless and helpful", instructions=md)
    token = add_labeler(db, "alice")
    with serve_in_background(ServeConfig(port=0), db) as url:
        run_simulated_labelers(url, project_id(db, "demo"), [SimulatedLabeler("alice", token), ...], "toxicity")
    report = agreement(db, "demo"); exclude_flagged(db, "demo")
    summary = export_pairs(db, "demo", ExportConfig(out_dir="runs/feedback"))
"""

from rlhf.feedback.agreement import AgreementReport, LabelerAgreement, kendall_tau_b, krippendorff_alpha
from rlhf.feedback.config import AgreementConfig, ExportConfig, ImportConfig, ServeConfig, SimulationConfig
from rlhf.feedback.db import Database, open_database
from rlhf.feedback.labelers import SimulatedLabeler, SimulationSummary, run_simulated_labelers
from rlhf.feedback.server import serve_in_background
from rlhf.feedback.service import (
    ExportSummary,
    ImportSummary,
    add_labeler,
    add_labelers,
    agreement,
    exclude_flagged,
    export_pairs,
    import_generations,
    project_id,
    run_export,
    run_import,
    set_excluded,
)

__all__ = [
    "AgreementConfig", "AgreementReport", "Database", "ExportConfig", "ExportSummary", "ImportConfig",
    "ImportSummary", "LabelerAgreement", "ServeConfig", "SimulationConfig", "add_labeler", "add_labelers",
    "agreement", "exclude_flagged", "export_pairs", "import_generations", "kendall_tau_b", "krippendorff_alpha",
    "open_database", "project_id", "run_export", "run_import", "run_simulated_labelers", "serve_in_background",
    "set_excluded", "SimulatedLabeler", "SimulationSummary",
]
