"""Test-wide settings: progress bars off, so stderr holds only what a test asserts on."""

import os

os.environ["SCIFM_PROGRESS"] = "0"
