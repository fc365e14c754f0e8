import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def data_folder():
    """Tests use the offline copy beside the checkout, or FGLIB_DATA when set."""
    return os.environ.get("FGLIB_DATA") or str(SHARED_DATA)


@pytest.fixture(scope="session")
def mnist():
    import fglib
    return fglib.load_data("mnist", root=data_folder())

