"""``mlc-mtp build CONFIG --dry-run``: :mod:`.plan` checks the config and plans the build from the
architecture alone (nothing read from the weights, compiled or written); :mod:`.report` formats it."""

from .plan import DryRun, dry_run
from .report import format_dry_run

__all__ = ["DryRun", "dry_run", "format_dry_run"]
