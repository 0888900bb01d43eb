from __future__ import annotations


class FaultController:
    pass
