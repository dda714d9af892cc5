"""When to ask the CA's renewal information (ACME ARI) of a certificate again

RFC 9773 asks a client to fetch a certificate's renewal information again on the CA's
``Retry-After`` schedule, so that a CA can pull renewals forward (a mass revocation): the time
of the next fetch, per certificate, indexed for the cloud's maintenance round.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ari_next_check", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_certificates_ari_next_check", ["ari_next_check"])


def downgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_certificates_ari_next_check")
        batch_op.drop_column("ari_next_check")
