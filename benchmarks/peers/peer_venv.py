"""The pinned virtual environment each peer script runs in (shared by the peers' scripts).

`ensure_venv(name, pins)` creates $LAKEFORGE_CACHE/<name> (default cache ~/.cache/lakeforge)
with exactly `pins` from PyPI the first time, or when the pins change, and re-executes the
calling script with that environment's python; inside it, it returns at once.
"""
import os
import subprocess
import sys
from pathlib import Path


def ensure_venv(name, pins):
    cache = Path(os.environ.get("LAKEFORGE_CACHE", Path.home() / ".cache" / "lakeforge"))
    venv = cache / name
    python = venv / "bin" / "python"
    marker = venv / "pins.txt"
    if not python.exists() or not marker.exists() or marker.read_text() != "\n".join(pins):
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)], stdout=sys.stderr)
        subprocess.check_call(
            [str(python), "-m", "pip", "install", "--quiet", *pins], stdout=sys.stderr
        )
        marker.write_text("\n".join(pins))
    if Path(sys.prefix).resolve() != venv.resolve():
        script = os.path.abspath(sys.argv[0])
        os.execv(str(python), [str(python), script, *sys.argv[1:]])
