"""data/ never imports model/: the data CLI and curation load without datalaws.model, and
the teacher (scoring, synthesis) is plugged in from model/."""

import subprocess
import sys


def test_data_does_not_import_model():
    code = ("import sys, argparse\n"
            "import datalaws.data, datalaws.data.cli, datalaws.data.curate, "
            "datalaws.data.store, datalaws.data.loader\n"
            "datalaws.data.cli.register_cli(argparse.ArgumentParser().add_subparsers())\n"
            "print(sorted(m for m in sys.modules if m.startswith('datalaws.model')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
