"""palyra-ops: GitOps for the Palyra daemon's background routines."""

__version__ = "0.1.0"
