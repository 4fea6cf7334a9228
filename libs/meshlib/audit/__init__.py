"""The audit trail: who changed what, when, with what outcome and under which trace.

Services write records in the transaction of the change (:class:`AuditRepository`, bound in
their unit of work as ``uow.audit``) into their own database; a sealer chains them
(:class:`AuditStore`); operators read and verify them through ``AuditService`` and
``openbank-mesh audit``. The gateway, which keeps no database, chains its decisions into
JSON-lines files per replica (:class:`AuditFileWriter`).
"""

from meshlib.audit.chain import GENESIS_HASH, Actor, ChainReport, ChainVerifier, actor_of, record_hash
from meshlib.audit.files import AuditFileWriter, verify_directory, verify_files
from meshlib.audit.store import (
    AuditFilter,
    AuditRepository,
    AuditStore,
    AuditTables,
    audit_tables,
    create_audit_tables,
    drop_audit_tables,
)

__all__ = [
    "GENESIS_HASH",
    "Actor",
    "AuditFileWriter",
    "AuditFilter",
    "AuditRepository",
    "AuditStore",
    "AuditTables",
    "ChainReport",
    "ChainVerifier",
    "actor_of",
    "audit_tables",
    "create_audit_tables",
    "drop_audit_tables",
    "record_hash",
    "verify_directory",
    "verify_files",
]
