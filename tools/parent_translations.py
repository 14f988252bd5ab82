"""The parent pages' French and Swahili, kept here as Python so they survive a `makemessages`
run: `make messages` extracts the English, fills each catalogue from these tables and compiles
the .mo files (committed, so the image needs no gettext). An English text missing here shows in
English."""

FR = {
    "For example %(example)s": "Par exemple %(example)s",
    "M-Pesa phone number": "Numéro de téléphone M-Pesa",
    "The phone that will receive the payment prompt, for example 0712 345 678.": "Le téléphone qui recevra la demande de paiement, par exemple 0712 345 678.",
    "Your email address": "Votre adresse e-mail",
    "The payment provider sends your receipt there.": "Le prestataire de paiement y envoie votre reçu.",
    "Enter your email address: the payment provider needs it.": "Saisissez votre adresse e-mail : le prestataire de paiement en a besoin.",
    "Write the amount without decimals: %(currency)s has none.": "Écrivez le montant sans décimales : le %(currency)s n'en a pas.",
    "Write the amount in figures only, for example %(example)s.": "Écrivez le montant en chiffres uniquement, par exemple %(example)s.",
    "Enter an amount greater than zero.": "Saisissez un montant supérieur à zéro.",
    "Amount to pay now": "Montant à payer maintenant",
    "Between %(low)s and %(high)s.": "Entre %(low)s et %(high)s.",
    "That is more than is due. Pay at most %(high)s.": "C'est plus que le montant dû. Payez au plus %(high)s.",
    "Pay at least %(low)s at a time.": "Payez au moins %(low)s à la fois.",
    "How did you pay?": "Comment avez-vous payé ?",
    "Reference": "Référence",
    "The bank or mobile-money transaction reference, or the cash receipt number.": "La référence du virement bancaire ou mobile money, ou le numéro du reçu en espèces.",
    "Receipt (optional)": "Reçu (facultatif)",
    "Amount paid": "Montant payé",
    "A photo or PDF of the receipt: %(types)s. At most %(size)s.": "Une photo ou un PDF du reçu : %(types)s. Au plus %(size)s.",
    "Enter the reference of your transfer.": "Saisissez la référence de votre virement.",
    "Bank transfer": "Virement bancaire",
    "Mobile money": "Mobile money",
    "Cash": "Espèces",
    "Card 4242 4242 4242 4242, any future expiry date, any CVC.": "Carte 4242 4242 4242 4242, toute date d'expiration future, tout CVC.",
    "Card 4084 0840 8408 4081, any future expiry date, CVV 408, PIN 0000, OTP 123456.": "Carte 4084 0840 8408 4081, toute date d'expiration future, CVV 408, PIN 0000, OTP 123456.",
    "Card 5531 8866 5214 2950, expiry 09/32, CVV 564, PIN 3310, OTP 12345.": "Carte 5531 8866 5214 2950, expiration 09/32, CVV 564, PIN 3310, OTP 12345.",
    "Card 4200 0000 0000 0000, expiry 12/34, CVV 123.": "Carte 4200 0000 0000 0000, expiration 12/34, CVV 123.",
    "telebirr or M-Pesa phone 0900123456 (mobile money).": "Téléphone telebirr ou M-Pesa 0900123456 (mobile money).",
    "Card 4242 4242 4242 4242, any future expiry date, any security code.": "Carte 4242 4242 4242 4242, toute date d'expiration future, tout code de sécurité.",
    "Phone 254708374149 (the Safaricom sandbox's test number).": "Téléphone 254708374149 (le numéro de test du bac à sable Safaricom).",
    "No card is needed: the dummy provider's page has Pay and Decline buttons.": "Aucune carte n'est nécessaire : la page du prestataire fictif a les boutons Payer et Refuser.",
    "Page not found": "Page introuvable",
    "There is nothing at this address. If you came from a pay link, check that you copied the whole link, or ask the school for a new one.": "Il n'y a rien à cette adresse. Si vous venez d'un lien de paiement, vérifiez que vous avez copié tout le lien, ou demandez-en un nouveau à l'école.",
    "What is this service?": "Qu'est-ce que ce service ?",
    "Pay school fees": "Payer les frais de scolarité",
    "Skip to content": "Aller au contenu",
    "Test mode": "Mode test",
    "no real money moves. Pay with the provider's test details:": "aucun argent réel ne circule. Payez avec les données de test du prestataire :",
    "see the provider's test documentation.": "voir la documentation de test du prestataire.",
    "School fees": "Frais de scolarité",
    "Language": "Langue",
    "Payments are confirmed by the school's payment provider.": "Les paiements sont confirmés par le prestataire de paiement de l'école.",
    "School fee payments": "Paiement des frais de scolarité",
    "This service takes school fee payments for schools: a parent pays from the link the school sends, by card, mobile money or bank transfer, and the school sees the payment in its books.": "Ce service encaisse les frais de scolarité pour les écoles : un parent paie depuis le lien envoyé par l'école, par carte, mobile money ou virement, et l'école voit le paiement dans sa comptabilité.",
    "To pay, open the pay link in the message from your school. If you have lost it, ask the school to send it again.": "Pour payer, ouvrez le lien de paiement du message de votre école. Si vous l'avez perdu, demandez à l'école de le renvoyer.",
    "School staff:": "Personnel de l'école :",
    "sign in": "se connecter",
    "Pay %(description)s – %(school)s": "Payer %(description)s – %(school)s",
    "Pay %(description)s": "Payer %(description)s",
    "There is a problem": "Il y a un problème",
    "Balance due": "Reste à payer",
    "Amount due": "Montant dû",
    "Student": "Élève",
    "For": "Pour",
    "Fee": "Frais",
    "Paid so far": "Déjà payé",
    "Due": "Échéance",
    "School": "École",
    "You may pay in parts of at least %(minimum)s.": "Vous pouvez payer en plusieurs fois, au moins %(minimum)s à chaque fois.",
    "You may pay in parts.": "Vous pouvez payer en plusieurs fois.",
    "Waiting for the school": "En attente de l'école",
    "You reported a %(method)s of %(amount)s on %(date)s.": "Vous avez déclaré un paiement (%(method)s) de %(amount)s le %(date)s.",
    "Reference %(reference)s.": "Référence %(reference)s.",
    "The school will check it and confirm. There is nothing to pay until then.": "L'école va le vérifier et le confirmer. Il n'y a rien à payer d'ici là.",
    "A payment is already under way": "Un paiement est déjà en cours",
    "You started paying with %(name)s at %(time)s.": "Vous avez commencé à payer avec %(name)s à %(time)s.",
    "A prompt was sent to %(phone)s.": "Une demande a été envoyée au %(phone)s.",
    "Continue with %(name)s": "Continuer avec %(name)s",
    "See its status": "Voir son état",
    "I did not pay: choose another way": "Je n'ai pas payé : choisir un autre moyen",
    "Pay now": "Payer maintenant",
    "Change the amount": "Changer le montant",
    "Continue": "Continuer",
    "Send %(name)s prompt": "Envoyer la demande %(name)s",
    "Pay %(amount)s with %(name)s": "Payer %(amount)s avec %(name)s",
    "Pay with %(name)s": "Payer avec %(name)s",
    "no real money moves.": "aucun argent réel ne circule.",
    "Paid another way?": "Payé autrement ?",
    "Tell the school about a bank transfer, mobile-money payment or cash payment. The school checks it and confirms.": "Signalez à l'école un virement bancaire, un paiement mobile money ou en espèces. L'école le vérifie et le confirme.",
    "Send to the school": "Envoyer à l'école",
    "Paid": "Payé",
    "Payment declined": "Paiement refusé",
    "Processing...": "En cours...",
    "The school could not confirm your payment": "L'école n'a pas pu confirmer votre paiement",
    "Thank you for telling us": "Merci de nous avoir prévenus",
    "Thank you": "Merci",
    "Waiting for your payment": "En attente de votre paiement",
    "%(amount)s was received for %(description)s.": "%(amount)s ont été reçus pour %(description)s.",
    "%(amount)s was received.": "%(amount)s ont été reçus.",
    "Still due on this fee: %(balance)s. You can pay it from the same link.": "Reste dû sur ces frais : %(balance)s. Vous pouvez le payer avec le même lien.",
    "The amount differs from what was asked (%(asked)s). The school will be in touch about the difference.": "Le montant diffère de celui demandé (%(asked)s). L'école vous contactera au sujet de la différence.",
    "This was more than was due. The school will be in touch about returning the extra payment.": "C'était plus que le montant dû. L'école vous contactera pour rembourser le surplus.",
    "Refunded": "Remboursé",
    "This payment of %(amount)s was refunded.": "Ce paiement de %(amount)s a été remboursé.",
    "Not confirmed": "Non confirmé",
    "Declined": "Refusé",
    "The school could not confirm the %(method)s you reported. Please contact the school.": "L'école n'a pas pu confirmer le paiement (%(method)s) que vous avez déclaré. Veuillez contacter l'école.",
    "We did not hear back from %(name)s in time, so this payment attempt has closed. No money was taken as far as we know.": "%(name)s n'a pas répondu à temps : cette tentative de paiement est close. À notre connaissance, aucun argent n'a été prélevé.",
    "%(name)s declined the payment. No money was taken.": "%(name)s a refusé le paiement. Aucun argent n'a été prélevé.",
    "Try again": "Réessayer",
    "You reported a %(method)s of %(amount)s.": "Vous avez déclaré un paiement (%(method)s) de %(amount)s.",
    "The school will check it and confirm. You can close this page.": "L'école va le vérifier et le confirmer. Vous pouvez fermer cette page.",
    "Check your phone (%(phone)s): enter your PIN in the %(name)s prompt to pay %(amount)s.": "Regardez votre téléphone (%(phone)s) : saisissez votre code PIN dans la demande %(name)s pour payer %(amount)s.",
    "We are waiting for %(name)s to confirm your payment of %(amount)s. This page updates by itself.": "Nous attendons que %(name)s confirme votre paiement de %(amount)s. Cette page se met à jour toute seule.",
    "You can leave this page: the school is told as soon as the payment is confirmed.": "Vous pouvez quitter cette page : l'école est prévenue dès que le paiement est confirmé.",
    "Back to the payment request": "Retour à la demande de paiement",
    "Already paid": "Déjà payé",
    "No longer open": "Plus ouverte",
    "Link not found": "Lien introuvable",
    "%(description)s for %(student)s (%(amount)s) was paid on %(date)s. Thank you.": "%(description)s pour %(student)s (%(amount)s) a été payé le %(date)s. Merci.",
    "There is nothing more to pay on this link.": "Il n'y a plus rien à payer avec ce lien.",
    "This payment request is no longer open": "Cette demande de paiement n'est plus ouverte",
    "%(school)s has withdrawn %(description)s. Nothing is due on this link.": "%(school)s a retiré %(description)s. Rien n'est dû avec ce lien.",
    "If you think this is a mistake, please contact the school.": "Si vous pensez qu'il s'agit d'une erreur, veuillez contacter l'école.",
    "Payment not found": "Paiement introuvable",
    "We could not find this payment. Please check the link, or open the pay link the school sent you.": "Nous n'avons pas trouvé ce paiement. Vérifiez le lien, ou ouvrez le lien de paiement envoyé par l'école.",
    "This pay link is not valid": "Ce lien de paiement n'est pas valide",
    "We could not find anything to pay at this address. Please check that you copied the whole link, or ask the school for a new one.": "Nous n'avons rien trouvé à payer à cette adresse. Vérifiez que vous avez copié tout le lien, ou demandez-en un nouveau à l'école.",
}

SW = {
    "For example %(example)s": "Kwa mfano %(example)s",
    "M-Pesa phone number": "Namba ya simu ya M-Pesa",
    "The phone that will receive the payment prompt, for example 0712 345 678.": "Simu itakayopokea ombi la malipo, kwa mfano 0712 345 678.",
    "Your email address": "Anwani yako ya barua pepe",
    "The payment provider sends your receipt there.": "Mtoa huduma wa malipo atatuma risiti yako huko.",
    "Enter your email address: the payment provider needs it.": "Weka anwani yako ya barua pepe: mtoa huduma wa malipo anaihitaji.",
    "Write the amount without decimals: %(currency)s has none.": "Andika kiasi bila desimali: %(currency)s haina.",
    "Write the amount in figures only, for example %(example)s.": "Andika kiasi kwa tarakimu tu, kwa mfano %(example)s.",
    "Enter an amount greater than zero.": "Weka kiasi kikubwa kuliko sifuri.",
    "Amount to pay now": "Kiasi cha kulipa sasa",
    "Between %(low)s and %(high)s.": "Kati ya %(low)s na %(high)s.",
    "That is more than is due. Pay at most %(high)s.": "Hicho ni zaidi ya kinachodaiwa. Lipa si zaidi ya %(high)s.",
    "Pay at least %(low)s at a time.": "Lipa angalau %(low)s kila mara.",
    "How did you pay?": "Ulilipaje?",
    "Reference": "Kumbukumbu",
    "The bank or mobile-money transaction reference, or the cash receipt number.": "Kumbukumbu ya muamala wa benki au pesa kwa simu, au namba ya risiti ya pesa taslimu.",
    "Receipt (optional)": "Risiti (si lazima)",
    "Amount paid": "Kiasi kilicholipwa",
    "A photo or PDF of the receipt: %(types)s. At most %(size)s.": "Picha au PDF ya risiti: %(types)s. Isizidi %(size)s.",
    "Enter the reference of your transfer.": "Weka kumbukumbu ya uhamisho wako.",
    "Bank transfer": "Uhamisho wa benki",
    "Mobile money": "Pesa kwa simu",
    "Cash": "Pesa taslimu",
    "Card 4242 4242 4242 4242, any future expiry date, any CVC.": "Kadi 4242 4242 4242 4242, tarehe yoyote ya baadaye ya kuisha, CVC yoyote.",
    "Card 4084 0840 8408 4081, any future expiry date, CVV 408, PIN 0000, OTP 123456.": "Kadi 4084 0840 8408 4081, tarehe yoyote ya baadaye ya kuisha, CVV 408, PIN 0000, OTP 123456.",
    "Card 5531 8866 5214 2950, expiry 09/32, CVV 564, PIN 3310, OTP 12345.": "Kadi 5531 8866 5214 2950, inaisha 09/32, CVV 564, PIN 3310, OTP 12345.",
    "Card 4200 0000 0000 0000, expiry 12/34, CVV 123.": "Kadi 4200 0000 0000 0000, inaisha 12/34, CVV 123.",
    "telebirr or M-Pesa phone 0900123456 (mobile money).": "Simu ya telebirr au M-Pesa 0900123456 (pesa kwa simu).",
    "Card 4242 4242 4242 4242, any future expiry date, any security code.": "Kadi 4242 4242 4242 4242, tarehe yoyote ya baadaye ya kuisha, namba yoyote ya usalama.",
    "Phone 254708374149 (the Safaricom sandbox's test number).": "Simu 254708374149 (namba ya majaribio ya Safaricom).",
    "No card is needed: the dummy provider's page has Pay and Decline buttons.": "Hakuna kadi inayohitajika: ukurasa wa mtoa huduma wa majaribio una vitufe vya Lipa na Kataa.",
    "Page not found": "Ukurasa haukupatikana",
    "There is nothing at this address. If you came from a pay link, check that you copied the whole link, or ask the school for a new one.": "Hakuna kitu kwenye anwani hii. Kama umetoka kwenye kiungo cha malipo, hakikisha umenakili kiungo chote, au omba shule ikupe kipya.",
    "What is this service?": "Huduma hii ni nini?",
    "Pay school fees": "Lipa ada ya shule",
    "Skip to content": "Nenda kwenye maudhui",
    "Test mode": "Hali ya majaribio",
    "no real money moves. Pay with the provider's test details:": "hakuna pesa halisi inayohamishwa. Lipa kwa taarifa za majaribio za mtoa huduma:",
    "see the provider's test documentation.": "angalia maelezo ya majaribio ya mtoa huduma.",
    "School fees": "Ada ya shule",
    "Language": "Lugha",
    "Payments are confirmed by the school's payment provider.": "Malipo yanathibitishwa na mtoa huduma wa malipo wa shule.",
    "School fee payments": "Malipo ya ada ya shule",
    "This service takes school fee payments for schools: a parent pays from the link the school sends, by card, mobile money or bank transfer, and the school sees the payment in its books.": "Huduma hii inapokea malipo ya ada kwa ajili ya shule: mzazi analipa kupitia kiungo ambacho shule inatuma, kwa kadi, pesa kwa simu au uhamisho wa benki, na shule inaona malipo kwenye hesabu zake.",
    "To pay, open the pay link in the message from your school. If you have lost it, ask the school to send it again.": "Ili kulipa, fungua kiungo cha malipo kwenye ujumbe kutoka shuleni kwako. Kama umekipoteza, omba shule ikutumie tena.",
    "School staff:": "Wafanyakazi wa shule:",
    "sign in": "ingia",
    "Pay %(description)s – %(school)s": "Lipa %(description)s – %(school)s",
    "Pay %(description)s": "Lipa %(description)s",
    "There is a problem": "Kuna tatizo",
    "Balance due": "Salio linalodaiwa",
    "Amount due": "Kiasi kinachodaiwa",
    "Student": "Mwanafunzi",
    "For": "Kwa ajili ya",
    "Fee": "Ada",
    "Paid so far": "Kilicholipwa hadi sasa",
    "Due": "Tarehe ya mwisho",
    "School": "Shule",
    "You may pay in parts of at least %(minimum)s.": "Unaweza kulipa kwa awamu za angalau %(minimum)s.",
    "You may pay in parts.": "Unaweza kulipa kwa awamu.",
    "Waiting for the school": "Inasubiri shule",
    "You reported a %(method)s of %(amount)s on %(date)s.": "Uliripoti malipo (%(method)s) ya %(amount)s tarehe %(date)s.",
    "Reference %(reference)s.": "Kumbukumbu %(reference)s.",
    "The school will check it and confirm. There is nothing to pay until then.": "Shule itakagua na kuthibitisha. Hakuna cha kulipa hadi wakati huo.",
    "A payment is already under way": "Malipo tayari yanaendelea",
    "You started paying with %(name)s at %(time)s.": "Ulianza kulipa kwa %(name)s saa %(time)s.",
    "A prompt was sent to %(phone)s.": "Ombi limetumwa kwa %(phone)s.",
    "Continue with %(name)s": "Endelea na %(name)s",
    "See its status": "Angalia hali yake",
    "I did not pay: choose another way": "Sikulipa: chagua njia nyingine",
    "Pay now": "Lipa sasa",
    "Change the amount": "Badilisha kiasi",
    "Continue": "Endelea",
    "Send %(name)s prompt": "Tuma ombi la %(name)s",
    "Pay %(amount)s with %(name)s": "Lipa %(amount)s kwa %(name)s",
    "Pay with %(name)s": "Lipa kwa %(name)s",
    "no real money moves.": "hakuna pesa halisi inayohamishwa.",
    "Paid another way?": "Umelipa kwa njia nyingine?",
    "Tell the school about a bank transfer, mobile-money payment or cash payment. The school checks it and confirms.": "Iambie shule kuhusu uhamisho wa benki, malipo ya pesa kwa simu au pesa taslimu. Shule itakagua na kuthibitisha.",
    "Send to the school": "Tuma kwa shule",
    "Paid": "Imelipwa",
    "Payment declined": "Malipo yamekataliwa",
    "Processing...": "Inashughulikiwa...",
    "The school could not confirm your payment": "Shule haikuweza kuthibitisha malipo yako",
    "Thank you for telling us": "Asante kwa kutujulisha",
    "Thank you": "Asante",
    "Waiting for your payment": "Tunasubiri malipo yako",
    "%(amount)s was received for %(description)s.": "%(amount)s zimepokelewa kwa ajili ya %(description)s.",
    "%(amount)s was received.": "%(amount)s zimepokelewa.",
    "Still due on this fee: %(balance)s. You can pay it from the same link.": "Bado inadaiwa kwa ada hii: %(balance)s. Unaweza kulipa kupitia kiungo hicho hicho.",
    "The amount differs from what was asked (%(asked)s). The school will be in touch about the difference.": "Kiasi kinatofautiana na kilichoombwa (%(asked)s). Shule itawasiliana nawe kuhusu tofauti hiyo.",
    "This was more than was due. The school will be in touch about returning the extra payment.": "Hiki kilikuwa zaidi ya kinachodaiwa. Shule itawasiliana nawe kuhusu kurudisha ziada.",
    "Refunded": "Imerejeshwa",
    "This payment of %(amount)s was refunded.": "Malipo haya ya %(amount)s yamerejeshwa.",
    "Not confirmed": "Haijathibitishwa",
    "Declined": "Imekataliwa",
    "The school could not confirm the %(method)s you reported. Please contact the school.": "Shule haikuweza kuthibitisha malipo (%(method)s) uliyoripoti. Tafadhali wasiliana na shule.",
    "We did not hear back from %(name)s in time, so this payment attempt has closed. No money was taken as far as we know.": "Hatukupata jibu kutoka %(name)s kwa wakati, kwa hiyo jaribio hili la malipo limefungwa. Kwa tunavyojua, hakuna pesa iliyochukuliwa.",
    "%(name)s declined the payment. No money was taken.": "%(name)s imekataa malipo. Hakuna pesa iliyochukuliwa.",
    "Try again": "Jaribu tena",
    "You reported a %(method)s of %(amount)s.": "Uliripoti malipo (%(method)s) ya %(amount)s.",
    "The school will check it and confirm. You can close this page.": "Shule itakagua na kuthibitisha. Unaweza kufunga ukurasa huu.",
    "Check your phone (%(phone)s): enter your PIN in the %(name)s prompt to pay %(amount)s.": "Angalia simu yako (%(phone)s): weka PIN yako kwenye ombi la %(name)s ili kulipa %(amount)s.",
    "We are waiting for %(name)s to confirm your payment of %(amount)s. This page updates by itself.": "Tunasubiri %(name)s ithibitishe malipo yako ya %(amount)s. Ukurasa huu unajisasisha wenyewe.",
    "You can leave this page: the school is told as soon as the payment is confirmed.": "Unaweza kuondoka kwenye ukurasa huu: shule inajulishwa mara tu malipo yanapothibitishwa.",
    "Back to the payment request": "Rudi kwenye ombi la malipo",
    "Already paid": "Tayari imelipwa",
    "No longer open": "Haipo wazi tena",
    "Link not found": "Kiungo hakikupatikana",
    "%(description)s for %(student)s (%(amount)s) was paid on %(date)s. Thank you.": "%(description)s ya %(student)s (%(amount)s) ililipwa tarehe %(date)s. Asante.",
    "There is nothing more to pay on this link.": "Hakuna zaidi cha kulipa kwenye kiungo hiki.",
    "This payment request is no longer open": "Ombi hili la malipo halipo wazi tena",
    "%(school)s has withdrawn %(description)s. Nothing is due on this link.": "%(school)s imeondoa %(description)s. Hakuna kinachodaiwa kwenye kiungo hiki.",
    "If you think this is a mistake, please contact the school.": "Kama unadhani hili ni kosa, tafadhali wasiliana na shule.",
    "Payment not found": "Malipo hayakupatikana",
    "We could not find this payment. Please check the link, or open the pay link the school sent you.": "Hatukuweza kupata malipo haya. Tafadhali kagua kiungo, au fungua kiungo cha malipo ambacho shule ilikutumia.",
    "This pay link is not valid": "Kiungo hiki cha malipo si sahihi",
    "We could not find anything to pay at this address. Please check that you copied the whole link, or ask the school for a new one.": "Hatukupata chochote cha kulipa kwenye anwani hii. Hakikisha umenakili kiungo chote, au omba shule ikupe kipya.",
}


# Texts with a plural: the English singular -> (singular, plural) in each language.
PLURALS = {
    "fr": {
        "Please try again in %(seconds)s second. Nothing you sent was lost: a payment you started is still there.": (
            "Veuillez réessayer dans %(seconds)s seconde. Rien de ce que vous avez envoyé n'est perdu : un paiement commencé est toujours là.",
            "Veuillez réessayer dans %(seconds)s secondes. Rien de ce que vous avez envoyé n'est perdu : un paiement commencé est toujours là.",
        ),
    },
    "sw": {
        "Please try again in %(seconds)s second. Nothing you sent was lost: a payment you started is still there.": (
            "Tafadhali jaribu tena baada ya sekunde %(seconds)s. Hakuna ulichotuma kilichopotea: malipo uliyoanza bado yapo.",
            "Tafadhali jaribu tena baada ya sekunde %(seconds)s. Hakuna ulichotuma kilichopotea: malipo uliyoanza bado yapo.",
        ),
    },
}
FR.update({
    "Dummy payment provider": "Prestataire de paiement fictif",
    "Dummy payment provider (development)": "Prestataire de paiement fictif (développement)",
    "Pay %(school)s": "Payer %(school)s",
    "This is the dummy provider: no money moves. It answers like a real provider, with a signed webhook to the school's service.": "C'est le prestataire fictif : aucun argent ne circule. Il répond comme un vrai prestataire, par un webhook signé au service de l'école.",
    "You already answered this payment (%(outcome)s). Answering again sends the same webhook again.": "Vous avez déjà répondu à ce paiement (%(outcome)s). Répondre à nouveau renvoie le même webhook.",
    "Asked": "Demandé",
    "Pay": "Payer",
    "Decline the payment": "Refuser le paiement",
    "Cancel and go back": "Annuler et revenir",
    "Please wait a moment": "Veuillez patienter un instant",
    "Too many requests came from your connection in a short time.": "Trop de demandes sont venues de votre connexion en peu de temps.",
})
SW.update({
    "Dummy payment provider": "Mtoa huduma wa malipo wa majaribio",
    "Dummy payment provider (development)": "Mtoa huduma wa malipo wa majaribio (maendeleo)",
    "Pay %(school)s": "Lipa %(school)s",
    "This is the dummy provider: no money moves. It answers like a real provider, with a signed webhook to the school's service.": "Huyu ni mtoa huduma wa majaribio: hakuna pesa inayohamishwa. Anajibu kama mtoa huduma halisi, kwa webhook iliyosainiwa kwa huduma ya shule.",
    "You already answered this payment (%(outcome)s). Answering again sends the same webhook again.": "Tayari umejibu malipo haya (%(outcome)s). Kujibu tena kunatuma webhook ile ile tena.",
    "Asked": "Kilichoombwa",
    "Pay": "Lipa",
    "Decline the payment": "Kataa malipo",
    "Cancel and go back": "Ghairi na urudi",
    "Please wait a moment": "Tafadhali subiri kidogo",
    "Too many requests came from your connection in a short time.": "Maombi mengi mno yametoka kwenye muunganisho wako kwa muda mfupi.",
})


def _po_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def fill(path: str, table: dict[str, str]) -> int:
    """Write the table's translations into the catalogue at ``path`` (made by makemessages);
    texts Django extracts from no source (the payment methods' labels) are appended. Returns
    how many texts are translated."""
    import re

    with open(path, encoding="utf-8") as handle:
        content = handle.read()
    # The header is ours now: not fuzzy (msgfmt would drop it, and with it the charset).
    content = content.replace("charset=CHARSET", "charset=UTF-8").replace('#, fuzzy\nmsgid ""\nmsgstr ""', 'msgid ""\nmsgstr ""', 1)
    seen: set[str] = set()

    def translate(found: re.Match) -> str:
        english = "".join(re.findall(r'"(.*)"', found.group(2))).replace('\\"', '"').replace("\\\\", "\\")
        seen.add(english)
        if not english or english not in table:
            return found.group(0)
        return f'{found.group(1)}msgstr "{_po_text(table[english])}"\n'

    content = re.sub(r'^(msgid ((?:".*"\n)+))msgstr (?:".*"\n?)+', translate, content, flags=re.M)
    plurals = PLURALS.get(path.split("/")[-3], {})

    def translate_plural(found: re.Match) -> str:
        english = "".join(re.findall(r'"(.*)"', found.group(2)))
        if english not in plurals:
            return found.group(0)
        one, many = plurals[english]
        return f'{found.group(1)}msgstr[0] "{_po_text(one)}"\nmsgstr[1] "{_po_text(many)}"\n'

    content = re.sub(
        r'^(msgid ((?:".*"\n)+)msgid_plural (?:".*"\n)+)msgstr\[0\] (?:".*"\n)+msgstr\[1\] (?:".*"\n?)+',
        translate_plural, content, flags=re.M,
    )  # fmt: skip
    content = re.sub(r"#, fuzzy\n(?=#|msgid \"[^\"])", "", content)
    extra = [english for english in table if english not in seen]
    content = content.rstrip("\n") + "\n" + "".join(
        f'\nmsgid "{_po_text(english)}"\nmsgstr "{_po_text(table[english])}"\n' for english in extra
    )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
    return len([english for english in table if english in seen or english in extra])


if __name__ == "__main__":
    for language, table in (("fr", FR), ("sw", SW)):
        print(language, fill(f"locale/{language}/LC_MESSAGES/django.po", table))
