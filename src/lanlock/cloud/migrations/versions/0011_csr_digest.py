"""The digest of the CSR a certificate was issued for

A box signs its CSR deterministically (RFC 6979), so it sends the same bytes each time it asks
with the same key and names. The cloud keeps the SHA-256 of the CSR each certificate was issued
for, checked then; a request with those very bytes needs no second signature check. Rows issued
before this revision have none, and their boxes' CSRs are checked as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("csr_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_column("csr_sha256")
