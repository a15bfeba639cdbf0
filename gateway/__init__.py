"""The imperative shell: SMTP, IMAP, sender, scheduler, CLI, configuration, daemon."""
