"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=True),
        sa.Column("box_id", sa.String(length=64), nullable=True),
        sa.Column("database_uuid", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_box_id"), ["box_id"], unique=False)

    op.create_table(
        "certificate_authorities",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("zone", sa.String(length=253), nullable=False),
        sa.Column("root_pem", sa.Text(), nullable=False),
        sa.Column("intermediate_pem", sa.Text(), nullable=False),
        sa.Column("root_key_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("intermediate_key_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "databases",
        sa.Column("uuid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )
    op.create_table(
        "issuance_leases",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.create_table(
        "seen_nonces",
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    with op.batch_alter_table("seen_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_seen_nonces_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "subscriptions",
        sa.Column("code", sa.String(length=128), nullable=False),
        sa.Column("database_uuid", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["database_uuid"],
            ["databases.uuid"],
        ),
        sa.PrimaryKeyConstraint("code"),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscriptions_database_uuid"), ["database_uuid"], unique=False
        )

    op.create_table(
        "boxes",
        sa.Column("box_id", sa.String(length=26), nullable=False),
        sa.Column("device_key_der", sa.LargeBinary(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("database_uuid", sa.String(length=64), nullable=False),
        sa.Column("subscription_code", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_address", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["database_uuid"],
            ["databases.uuid"],
        ),
        sa.ForeignKeyConstraint(
            ["subscription_code"],
            ["subscriptions.code"],
        ),
        sa.PrimaryKeyConstraint("box_id"),
        sa.UniqueConstraint("scope"),
    )
    with op.batch_alter_table("boxes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_boxes_database_uuid"), ["database_uuid"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_boxes_subscription_code"), ["subscription_code"], unique=False
        )

    op.create_table(
        "subscription_lines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscription_code", sa.String(length=128), nullable=False),
        sa.Column("product", sa.String(length=32), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["subscription_code"], ["subscriptions.code"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("subscription_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscription_lines_subscription_code"),
            ["subscription_code"],
            unique=False,
        )

    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("box_id", sa.String(length=26), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=48), nullable=False),
        sa.Column("issuer", sa.String(length=16), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("x509_pem", sa.Text(), nullable=False),
        sa.Column("chain_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["box_id"], ["boxes.box_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_certificates_scope_key", ["scope", "key_fingerprint"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index("ix_certificates_scope_key")

    op.drop_table("certificates")
    with op.batch_alter_table("subscription_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscription_lines_subscription_code"))

    op.drop_table("subscription_lines")
    with op.batch_alter_table("boxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_boxes_subscription_code"))
        batch_op.drop_index(batch_op.f("ix_boxes_database_uuid"))

    op.drop_table("boxes")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_database_uuid"))

    op.drop_table("subscriptions")
    with op.batch_alter_table("seen_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seen_nonces_expires_at"))

    op.drop_table("seen_nonces")
    op.drop_table("issuance_leases")
    op.drop_table("databases")
    op.drop_table("certificate_authorities")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_box_id"))
        batch_op.drop_index(batch_op.f("ix_audit_at"))

    op.drop_table("audit")
