"""Certificate store: SQLModel records, SQL implementation, Alembic migrations."""
