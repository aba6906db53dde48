"""Where the MongoDB sources keep their positions: a collection of their own deployment, or the file store."""

from __future__ import annotations

from typing import Any, ClassVar

from bspump import CheckpointStore
from bspump.config import Choice

from .checkpoint import MongoDBCheckpointStore
from .connection import MongoDBConnection


class CheckpointInDeployment:
    """Mixin of the MongoDB sources choosing their checkpoint store.

    ``checkpoint_store``: ``collection`` (default) keeps positions in ``checkpoint_collection`` (default
    ``bspump_checkpoints``) of ``checkpoint_database`` (default the connection's database), written with the
    connection's write concern; ``file`` uses the application's file store (``[general] state_dir``).
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "checkpoint_store": Choice("collection", ("collection", "file")),
        "checkpoint_collection": "bspump_checkpoints",
        "checkpoint_database": "",
    }
    Config: Any
    app: Any
    connection: Any
    _store: CheckpointStore | None = None

    def checkpoint_store(self) -> CheckpointStore:
        """The store chosen by ``checkpoint_store``; created on first use."""
        if self._store is None:
            if self.Config.getchoice("checkpoint_store") == "file":
                self._store = self.app.checkpoints
            else:
                assert isinstance(self.connection, MongoDBConnection)
                self._store = MongoDBCheckpointStore(self.connection, self.checkpoint_namespace()[1],
                                                     self.checkpoint_namespace()[0])
        return self._store

    def checkpoint_namespace(self) -> tuple[str, str]:
        """``(database, collection)`` of the checkpoint collection."""
        assert isinstance(self.connection, MongoDBConnection)
        database = self.Config.get("checkpoint_database") or self.connection.default_database
        return database, self.Config.get("checkpoint_collection") or "bspump_checkpoints"
