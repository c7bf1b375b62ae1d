"""`connector demo`: the real pipeline between a simulated PBX and a local API, all on loopback.

    command.py, options.py  the argparse wiring (light: the simulators load only when the demo runs)
    run.py                  one run: settings, the connector between the simulators, Ctrl-C, the audit
    report.py               what the run found, and the summary printed at the end
    ami_server.py, pbx.py, call_mix.py   the simulated PBX: an AMI server, its calls and recordings
    receiver*.py, recording_upload.py, multipart.py   the local API the connector sends to
    ports.py                free_port, for the demo's monitoring port (and the tests')

Keep this module empty of imports of the simulators: `connector --help` imports it.
"""

from __future__ import annotations

# `connector.cli` imported `add_demo_parser` from here before the package split.
from connector.demo.command import add_demo_parser

__all__ = ["add_demo_parser"]
