"""The published contract: imagehook's OpenAPI 3.1 document, built from the tables the code runs on."""
