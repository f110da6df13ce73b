"""Runs bound to the backend that runs them; simulated reference times per session of the installer.

A row of ``job_run`` is the token of a run: the helpers a run calls take its id and accept it only
while it is running in the backend that began it (process id and backend start time), and read the
reference time from it. ``engine`` says which runner began it (run, entity, anonymiser).

Reference times other than the clock (simulations in tests and demos) were allowed by the setting
``allow_future_reference_time``, which the admin could change. They are now allowed only in a
session of the installing role that called ``pgretention.simulation_enable()``: one row per such
backend in ``pgretention.simulation``, readable and writable by the owner of the schema only.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE pgretention.job_run
            ADD COLUMN engine text CHECK (engine IN ('run', 'entity', 'anonymiser')),
            ADD COLUMN backend_pid int,
            ADD COLUMN backend_start timestamptz;
        CREATE INDEX job_run_running_idx ON pgretention.job_run (backend_pid) WHERE status = 'running';

        CREATE TABLE pgretention.simulation (
            backend_pid   int NOT NULL,
            backend_start timestamptz NOT NULL,
            enabled_by    name NOT NULL DEFAULT session_user,
            enabled_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (backend_pid, backend_start)
        );
        COMMENT ON TABLE pgretention.simulation IS
            'Sessions of the installing role allowed reference times other than the clock (owner-only)';

        DELETE FROM pgretention.setting WHERE name = 'allow_future_reference_time';
        """
    )


def downgrade() -> None:
    raise NotImplementedError("pgretention upgrades are forward-only")
