"""What every app builds on and that imports no app of ours: money, the payment status vocabulary,
error kinds, encrypted fields, phone numbers. Nothing here knows about schools or providers."""
