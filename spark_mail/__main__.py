from spark_mail.cli import main

main()
