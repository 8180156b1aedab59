"""Stage placeholder: filled by a later issue (see ARCHITECTURE in docs/)."""
