"""evaluation: result descriptors, reader assessments, reference standards, monitoring alarms

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:42:24.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('monitoring_alarms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('scanner', sa.String(length=128), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=False),
    sa.Column('raised_on', sa.Date(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'scanner', 'subject', 'raised_on', name='uq_monitoring_alarm')
    )
    with op.batch_alter_table('monitoring_alarms', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_monitoring_alarms_kind'), ['kind'], unique=False)

    op.create_table('reference_standards',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('recurrence', sa.Boolean(), nullable=False),
    sa.Column('method', sa.String(length=24), nullable=False),
    sa.Column('reference_date', sa.Date(), nullable=True),
    sa.Column('source', sa.String(length=128), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('reference_standards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reference_standards_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_reference_standards_study_id'), ['study_id'], unique=False)

    op.create_table('reader_assessments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('reader', sa.String(length=128), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('reader_finding', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=48), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('seen_ai_before_report', sa.Boolean(), nullable=True),
    sa.Column('assessed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['result_id'], ['results.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sop_instance_uid')
    )
    with op.batch_alter_table('reader_assessments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reader_assessments_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_reader_assessments_result_id'), ['result_id'], unique=False)
        batch_op.create_index('ix_reader_assessments_result_reader', ['result_id', 'reader'], unique=False)
        batch_op.create_index(batch_op.f('ix_reader_assessments_study_id'), ['study_id'], unique=False)

    op.create_table('result_descriptors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('manufacturer', sa.String(length=64), nullable=True),
    sa.Column('scanner_model', sa.String(length=64), nullable=True),
    sa.Column('software_versions', sa.String(length=128), nullable=True),
    sa.Column('reconstruction_method', sa.String(length=128), nullable=True),
    sa.Column('convolution_kernel', sa.String(length=128), nullable=True),
    sa.Column('tracer', sa.String(length=128), nullable=True),
    sa.Column('pet_voxel_mm', sa.JSON(), nullable=True),
    sa.Column('pet_slice_thickness_mm', sa.Float(), nullable=True),
    sa.Column('injected_activity_mbq', sa.Float(), nullable=True),
    sa.Column('uptake_time_min', sa.Float(), nullable=True),
    sa.Column('weight_kg', sa.Float(), nullable=True),
    sa.Column('psa_ng_ml', sa.Float(), nullable=True),
    sa.Column('psa_source', sa.String(length=16), nullable=True),
    sa.Column('prostatectomy', sa.Boolean(), nullable=True),
    sa.Column('prostatectomy_source', sa.String(length=16), nullable=True),
    sa.Column('model_id', sa.String(length=32), nullable=True),
    sa.Column('weights_sha256', sa.String(length=64), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('probability', sa.Float(), nullable=True),
    sa.Column('positive', sa.Boolean(), nullable=True),
    sa.Column('results_mode', sa.String(length=8), nullable=False),
    sa.Column('envelope_violations', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['result_id'], ['results.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('result_id')
    )
    with op.batch_alter_table('result_descriptors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_result_descriptors_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_result_descriptors_scanner_model'), ['scanner_model'], unique=False)
        batch_op.create_index(batch_op.f('ix_result_descriptors_study_id'), ['study_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('result_descriptors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_result_descriptors_study_id'))
        batch_op.drop_index(batch_op.f('ix_result_descriptors_scanner_model'))
        batch_op.drop_index(batch_op.f('ix_result_descriptors_created_at'))

    op.drop_table('result_descriptors')
    with op.batch_alter_table('reader_assessments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reader_assessments_study_id'))
        batch_op.drop_index('ix_reader_assessments_result_reader')
        batch_op.drop_index(batch_op.f('ix_reader_assessments_result_id'))
        batch_op.drop_index(batch_op.f('ix_reader_assessments_created_at'))

    op.drop_table('reader_assessments')
    with op.batch_alter_table('reference_standards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reference_standards_study_id'))
        batch_op.drop_index(batch_op.f('ix_reference_standards_created_at'))

    op.drop_table('reference_standards')
    with op.batch_alter_table('monitoring_alarms', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_monitoring_alarms_kind'))

    op.drop_table('monitoring_alarms')
