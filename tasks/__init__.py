"""SeqIO task and mixture registrations (import name `gecko_tasks`), imported from gin files."""
