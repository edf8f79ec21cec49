"""The probing sections of the reports: records, the SQL that fills them, and their plots."""
